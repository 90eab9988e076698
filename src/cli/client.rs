//! The API client behind the command-line commands (`readerd merchants …`, `readers …`,
//! `locations …`, and the payment commands): one place for the address, the token, the
//! error shape and `--json` output.

use clap::Args;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::process::ExitCode;

/// The default API address (the daemon's default `api.listen`).
pub const DEFAULT_API: &str = "http://127.0.0.1:7700";

/// Options shared by every client command.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// The daemon's API.
    #[arg(long, global = true, default_value = DEFAULT_API, env = "READERD_API")]
    pub api: String,
    /// The bearer token (prefer the environment variable: arguments show in `ps`).
    #[arg(long, global = true, env = "READERD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// With an HTTPS API: the CA that signed its certificate (PEM), e.g. the venue's CA.
    #[arg(long, global = true, env = "READERD_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// With `[api.tls] client_ca_file`: this client's certificate (PEM).
    #[arg(
        long,
        global = true,
        env = "READERD_CLIENT_CERT",
        requires = "client_key"
    )]
    pub client_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM, PKCS#8).
    #[arg(
        long,
        global = true,
        env = "READERD_CLIENT_KEY",
        requires = "client_cert"
    )]
    pub client_key: Option<std::path::PathBuf>,
}

/// A failed API call, as shown to the user.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with its error envelope.
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot reach the readerd API at {api}: {message}")]
    Unreachable { api: String, message: String },
    #[error("unexpected answer from the API: {0}")]
    Unexpected(String),
    #[error("{0}")]
    Usage(String),
}

impl ClientError {
    /// Prints the error plainly and gives the exit code (1 for API refusals and usage, 69
    /// `EX_UNAVAILABLE` when the API cannot be reached).
    pub fn report(&self) -> ExitCode {
        eprintln!("readerd: {self}");
        match self {
            ClientError::Unreachable { .. } => ExitCode::from(69),
            _ => ExitCode::FAILURE,
        }
    }
}

/// A small client of the daemon's API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    pub fn new(args: &ApiArgs) -> Result<Self, ClientError> {
        let read = |flag: &str, path: &std::path::Path| {
            std::fs::read(path)
                .map_err(|e| ClientError::Usage(format!("--{flag} {}: {e}", path.display())))
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(120));
        if let Some(ca) = &args.ca_file {
            let cert = reqwest::Certificate::from_pem(&read("ca-file", ca)?).map_err(|e| {
                ClientError::Usage(format!(
                    "--ca-file {}: not a PEM certificate: {e}",
                    ca.display()
                ))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
            let mut pem = read("client-cert", cert)?;
            pem.extend_from_slice(b"\n");
            pem.extend(read("client-key", key)?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                ClientError::Usage(format!(
                    "--client-cert {} / --client-key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?;
            builder = builder.identity(id);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Unexpected(e.to_string()))?;
        let base = args.api.trim().trim_end_matches('/').to_string();
        match reqwest::Url::parse(&base) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            _ => {
                return Err(ClientError::Usage(format!(
                    "--api `{base}` is not a URL; write it like {DEFAULT_API}"
                )))
            }
        }
        // Tokens never contain whitespace; a pasted one often ends with a line break.
        let token = args
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        if let Some(t) = &token {
            if reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).is_err() {
                return Err(ClientError::Usage(
                    "the token contains characters that cannot be sent in an HTTP header".into(),
                ));
            }
        }
        Ok(ApiClient { base, token, http })
    }

    /// The innermost cause of a transport error ("Connection refused …"), which is what a
    /// reader needs; reqwest's own text only says that sending failed.
    fn unreachable(&self, e: &reqwest::Error) -> ClientError {
        let mut cause: &dyn std::error::Error = e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        let detail = if e.is_timeout() {
            "no answer in time".to_string()
        } else {
            cause.to_string()
        };
        ClientError::Unreachable {
            api: self.base.clone(),
            message: format!(
                "{detail} (is `readerd run` listening there? see --api or READERD_API)"
            ),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        Ok(self.send_paged(req).await?.0)
    }

    /// Sends, and answers the body with the path of the next page named by a `Link: <…>;
    /// rel="next"` header, if any.
    async fn send_paged(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(Value, Option<String>), ClientError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let next = resp
            .headers()
            .get_all(reqwest::header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(next_link);
        let text = resp.text().await.map_err(|e| self.unreachable(&e))?;
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|_| {
                ClientError::Unexpected(format!(
                    "{status}: {}",
                    text.chars().take(200).collect::<String>()
                ))
            })?
        };
        if status.is_success() {
            return Ok((value, next));
        }
        Err(self.refusal(status, &value, &text))
    }

    /// The API's error envelope as a [`ClientError`].
    fn refusal(&self, status: reqwest::StatusCode, value: &Value, text: &str) -> ClientError {
        let err = &value["error"];
        let mut message = err["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| text.chars().take(200).collect());
        if status == reqwest::StatusCode::UNAUTHORIZED && self.token.is_none() {
            message.push_str(" (give a token with --token or the READERD_TOKEN variable)");
        }
        ClientError::Api {
            status: status.as_u16(),
            code: err["code"].as_str().unwrap_or("unknown").to_string(),
            message,
        }
    }

    /// Opens a Server-Sent Events stream (`GET …/events`). The stream may stay open for as
    /// long as a customer takes to tap, so the client's overall timeout does not apply; the
    /// daemon's keep-alive comments show that the connection is alive.
    pub async fn events(&self, path: &str) -> Result<EventStream, ClientError> {
        let mut req = self
            .http
            .get(self.url(path))
            .header("Accept", "text/event-stream")
            .timeout(std::time::Duration::from_secs(24 * 3600));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.map_err(|e| self.unreachable(&e))?;
            let value = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Err(self.refusal(status, &value, &text));
        }
        Ok(EventStream {
            client: self.clone(),
            resp,
            buf: Vec::new(),
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.send(self.http.get(self.url(path))).await
    }

    /// A GET of a list, following its `Link: rel="next"` pages until the last one, or until
    /// `max` items. Calls `each` with every page's items as they arrive.
    pub async fn get_all_pages(
        &self,
        path: &str,
        max: Option<usize>,
        mut each: impl FnMut(Vec<Value>),
    ) -> Result<usize, ClientError> {
        let mut path = path.to_string();
        let mut n = 0;
        loop {
            let (v, next) = self.send_paged(self.http.get(self.url(&path))).await?;
            let mut items = match v {
                Value::Array(a) => a,
                other => {
                    return Err(ClientError::Unexpected(format!(
                        "a list was expected, not {other}"
                    )))
                }
            };
            if let Some(m) = max {
                items.truncate(m.saturating_sub(n));
            }
            n += items.len();
            each(items);
            match next {
                Some(p) if max.is_none_or(|m| n < m) => path = p,
                _ => return Ok(n),
            }
        }
    }

    pub async fn post<B: Serialize>(&self, path: &str, body: &B) -> Result<Value, ClientError> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    /// A POST with an `Idempotency-Key`.
    pub async fn post_idempotent<B: Serialize>(
        &self,
        path: &str,
        body: &B,
        key: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut req = self.http.post(self.url(path)).json(body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        self.send(req).await
    }

    /// A POST without a body.
    pub async fn post_empty(&self, path: &str) -> Result<Value, ClientError> {
        self.send(self.http.post(self.url(path))).await
    }
}

/// The target of a `Link` header value's `rel="next"` link, as a path (RFC 8288; only the
/// first link of the value is read, which is all readerd sends).
fn next_link(value: &str) -> Option<String> {
    let (target, params) = value.trim().strip_prefix('<')?.split_once('>')?;
    let next = params
        .split(';')
        .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"));
    if !next {
        return None;
    }
    // An absolute URL is reduced to its path and query, which the client's base prefixes.
    match target.find("://") {
        Some(i) => {
            let rest = &target[i + 3..];
            Some(rest[rest.find('/').unwrap_or(rest.len())..].to_string())
        }
        None => Some(target.to_string()),
    }
}

/// One Server-Sent Event: its `event:` name (`message` when absent) and its `data:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// An open `text/event-stream` answer, read event by event.
#[derive(Debug)]
pub struct EventStream {
    client: ApiClient,
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl EventStream {
    /// The next event; `None` once the daemon has ended the stream.
    pub async fn next(&mut self) -> Result<Option<SseEvent>, ClientError> {
        loop {
            if let Some((block, rest)) = split_block(&self.buf) {
                let event = parse_block(&String::from_utf8_lossy(block));
                self.buf = rest.to_vec();
                match event {
                    Some(e) => return Ok(Some(e)),
                    None => continue, // a keep-alive comment
                }
            }
            match self.resp.chunk().await {
                Ok(Some(bytes)) => self.buf.extend_from_slice(&bytes),
                Ok(None) => return Ok(None),
                Err(e) => return Err(self.client.unreachable(&e)),
            }
        }
    }
}

/// The first complete block of `buf` (up to a blank line) and what follows it.
fn split_block(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut i = 0;
    while i < buf.len() {
        for sep in [&b"\r\n\r\n"[..], b"\n\n", b"\r\r"] {
            if buf[i..].starts_with(sep) {
                return Some((&buf[..i], &buf[i + sep.len()..]));
            }
        }
        i += 1;
    }
    None
}

/// One block of `text/event-stream` lines as an event (`None` for comments only).
fn parse_block(block: &str) -> Option<SseEvent> {
    let mut event = None;
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => event = Some(value.to_string()),
            "data" => data.push(value),
            _ => {} // comments (empty field), id, retry
        }
    }
    if event.is_none() && data.is_empty() {
        return None;
    }
    Some(SseEvent {
        event: event.unwrap_or_else(|| "message".into()),
        data: data.join("\n"),
    })
}

/// Follows one object (`path`, such as `/v1/setups/{id}`) through `{path}/events` until
/// `is_final` says its status is final, printing `describe`'s line whenever it changes and
/// reading the stream again after a pause when it drops. The first Ctrl-C asks
/// `{path}/cancel` and follows on to the end. `event` is the stream's event name; `noun`
/// names the object when an event's data is not JSON.
pub async fn follow_until_final(
    c: &ApiClient,
    path: &str,
    event: &str,
    noun: &str,
    describe: impl Fn(&Value) -> String,
    is_final: impl Fn(&str) -> bool,
) -> Result<Value, ClientError> {
    let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
    let mut interrupted = false;
    let events_path = format!("{path}/events");
    let mut last = String::new();
    loop {
        let mut events = c.events(&events_path).await?;
        loop {
            let next = tokio::select! {
                e = events.next() => e?,
                _ = &mut ctrl_c, if !interrupted => {
                    interrupted = true;
                    println!("cancelling…");
                    c.post_empty(&format!("{path}/cancel")).await?;
                    continue;
                }
            };
            let Some(next) = next else { break };
            if next.event != event {
                continue;
            }
            let v: Value = serde_json::from_str(&next.data)
                .map_err(|_| ClientError::Unexpected(format!("not {noun}: {}", next.data)))?;
            let line = describe(&v);
            if line != last {
                println!("{line}");
                last = line;
            }
            if is_final(v["status"].as_str().unwrap_or("")) {
                return Ok(v);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Decodes an answer into a typed view.
pub fn decode<T: DeserializeOwned>(v: Value) -> Result<T, ClientError> {
    serde_json::from_value(v).map_err(|e| ClientError::Unexpected(e.to_string()))
}

/// Prints JSON for scripts.
pub fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// Runs an async client command on a small runtime and turns its error into an exit code.
pub fn block_on<F>(fut: F) -> ExitCode
where
    F: std::future::Future<Output = Result<(), ClientError>>,
{
    let Some(rt) = crate::cli::runtime("readerd", false) else {
        return ExitCode::FAILURE;
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

/// A plain text table: columns padded to their widest cell.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) -> &mut Self {
        self.rows.push(cells);
        self
    }

    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r.get(c).map(|s| s.chars().count()).unwrap_or(0))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for r in &self.rows {
            let mut line = String::new();
            for (c, w) in widths.iter().enumerate() {
                let cell = r.get(c).map(String::as_str).unwrap_or("");
                if c + 1 == cols {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<w$}  "));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// `-` for an absent value.
pub fn or_dash(v: Option<impl ToString>) -> String {
    v.map(|s| s.to_string()).unwrap_or_else(|| "-".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_stream_blocks_become_events() {
        let text =
            b": keep-alive\n\nevent: payment\ndata: {\"a\":1}\n\ndata: x\ndata: y\n\nevent: pay";
        let (first, rest) = split_block(text).unwrap();
        assert_eq!(parse_block(std::str::from_utf8(first).unwrap()), None);
        let (second, rest) = split_block(rest).unwrap();
        assert_eq!(
            parse_block(std::str::from_utf8(second).unwrap()),
            Some(SseEvent {
                event: "payment".into(),
                data: "{\"a\":1}".into()
            })
        );
        let (third, rest) = split_block(rest).unwrap();
        assert_eq!(
            parse_block(std::str::from_utf8(third).unwrap()).unwrap(),
            SseEvent {
                event: "message".into(),
                data: "x\ny".into()
            }
        );
        assert_eq!(
            split_block(rest),
            None,
            "an unfinished block waits for more"
        );
        let crlf = b"event: a\r\ndata: b\r\n\r\n";
        let (block, _) = split_block(crlf).unwrap();
        assert_eq!(
            parse_block(std::str::from_utf8(block).unwrap())
                .unwrap()
                .data,
            "b"
        );
    }

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(&["ID", "LABEL"]);
        t.row(vec!["tmr_1".into(), "front".into()]);
        t.row(vec!["tmr_12345".into(), "-".into()]);
        assert_eq!(
            t.render(),
            "ID         LABEL\ntmr_1      front\ntmr_12345  -\n"
        );
    }
}
