//! `readerd inputs …`: inputs on a reader's screen (an email for the receipt, a signature on
//! an agreement). `collect` queues an input collection and follows it live over its event
//! stream until the customer answers (exit 0, the answers printed), walks away or it is
//! canceled (exit 1); Ctrl-C asks the daemon to cancel and keeps following.

use super::client::{
    block_on, follow_until_final, or_dash, print_json, ApiArgs, ApiClient, ClientError, Table,
};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct InputsCmd {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(subcommand)]
    pub action: InputsAction,
}

#[derive(Subcommand, Debug)]
pub enum InputsAction {
    /// Ask the customer for up to five inputs on the reader's screen and follow the answers.
    Collect {
        /// The reader (`tmr_…` or its label).
        #[arg(long)]
        reader: String,
        /// The merchant it is for (a pos client with one merchant may leave it out).
        #[arg(long)]
        merchant: Option<String>,
        /// `TYPE:TITLE`, repeated in screen order; TYPE is email, phone, text, numeric,
        /// signature or selection (its choices from `--choice`).
        #[arg(long = "input", value_name = "TYPE:TITLE")]
        inputs: Vec<String>,
        /// `ID=TEXT`: a choice of the selection input.
        #[arg(long = "choice", value_name = "ID=TEXT")]
        choices: Vec<String>,
        /// Every input must be answered (no skip button).
        #[arg(long)]
        required: bool,
        /// The inputs as the API takes them (a JSON array), instead of `--input`.
        #[arg(long, value_name = "JSON", conflicts_with = "inputs")]
        inputs_json: Option<String>,
        /// Queue it and return at once, without following it.
        #[arg(long)]
        no_follow: bool,
    },
    /// List input collections (newest first).
    List {
        #[arg(long)]
        reader: Option<String>,
    },
    /// Show one input collection with its answers.
    Show { id: String },
    /// Cancel an input collection (our own action on the reader is cleared).
    Cancel { id: String },
}

/// The `inputs` array of the API from `--input` and `--choice`.
fn build_inputs(inputs: &[String], choices: &[String], required: bool) -> Result<Value, String> {
    if inputs.is_empty() {
        return Err("give at least one --input TYPE:TITLE (or --inputs-json)".into());
    }
    let mut out = Vec::new();
    for spec in inputs {
        let (kind, title) = spec.split_once(':').ok_or_else(|| {
            format!("--input {spec:?}: write it TYPE:TITLE, such as email:Your email")
        })?;
        let mut input =
            json!({"type": kind, "required": required, "custom_text": {"title": title}});
        if kind == "selection" {
            let mut list = Vec::new();
            for c in choices {
                let (id, text) = c
                    .split_once('=')
                    .ok_or_else(|| format!("--choice {c:?}: write it ID=TEXT"))?;
                list.push(json!({"id": id, "text": text}));
            }
            if list.is_empty() {
                return Err("a selection input needs --choice ID=TEXT".into());
            }
            input["selection"] = json!({"choices": list});
        }
        out.push(input);
    }
    Ok(Value::Array(out))
}

fn final_status(s: &str) -> bool {
    matches!(s, "succeeded" | "failed" | "canceled")
}

/// One line per input: its title and the answer.
fn print_answers(c: &Value) {
    let mut t = Table::new(&["type", "title", "answer"]);
    for i in c["inputs"].as_array().into_iter().flatten() {
        let answer = if i["skipped"] == true {
            "(skipped)".to_string()
        } else {
            or_dash(i["value"].as_str())
        };
        let toggles: Vec<String> = i["toggles"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                format!(
                    "{}: {}",
                    t["title"]
                        .as_str()
                        .or(t["description"].as_str())
                        .unwrap_or("?"),
                    t["value"].as_str().unwrap_or("-")
                )
            })
            .collect();
        let answer = if toggles.is_empty() {
            answer
        } else {
            format!("{answer} ({})", toggles.join(", "))
        };
        t.row(vec![
            or_dash(i["type"].as_str()),
            or_dash(i["custom_text"]["title"].as_str()),
            answer,
        ]);
    }
    t.print();
}

fn describe(c: &Value) -> String {
    let status = c["status"].as_str().unwrap_or("?");
    match status {
        "queued" => "queued: waiting for the reader".into(),
        "collecting" => "on the reader's screen: waiting for the customer…".into(),
        "failed" => format!(
            "failed: {}",
            c["failure"]["message"].as_str().unwrap_or("unknown")
        ),
        other => other.to_string(),
    }
}

/// Follows an input collection until it is final, printing each change.
async fn follow(c: &ApiClient, id: &str) -> Result<Value, ClientError> {
    let path = format!("/v1/input_collections/{id}");
    let noun = "an input collection";
    follow_until_final(c, &path, "input_collection", noun, describe, final_status).await
}

impl InputsCmd {
    pub fn run(self) -> ExitCode {
        let mut code = ExitCode::SUCCESS;
        let json_out = self.api.json;
        let out = block_on(async {
            let c = ApiClient::new(&self.api)?;
            match self.action {
                InputsAction::Collect {
                    reader,
                    merchant,
                    inputs,
                    choices,
                    required,
                    inputs_json,
                    no_follow,
                } => {
                    let inputs = match inputs_json {
                        Some(j) => serde_json::from_str(&j).map_err(|e| {
                            ClientError::Usage(format!("--inputs-json is not JSON: {e}"))
                        })?,
                        None => {
                            build_inputs(&inputs, &choices, required).map_err(ClientError::Usage)?
                        }
                    };
                    let body = json!({"merchant": merchant, "inputs": inputs});
                    let v = c
                        .post(&format!("/v1/readers/{reader}/inputs"), &body)
                        .await?;
                    let id = v["id"].as_str().unwrap_or_default().to_string();
                    if no_follow {
                        if json_out {
                            print_json(&v);
                        } else {
                            println!(
                                "input collection {id} queued on {}",
                                or_dash(v["reader"].as_str())
                            );
                        }
                        return Ok(());
                    }
                    println!("input collection {id} on {}", or_dash(v["reader"].as_str()));
                    let last = follow(&c, &id).await?;
                    if json_out {
                        print_json(&last);
                    } else if last["status"] == "succeeded" {
                        print_answers(&last);
                    }
                    if last["status"] != "succeeded" {
                        code = ExitCode::FAILURE;
                    }
                }
                InputsAction::List { reader } => {
                    let path = match reader {
                        Some(r) => format!("/v1/input_collections?reader={r}"),
                        None => "/v1/input_collections".to_string(),
                    };
                    let v = c.get(&path).await?;
                    if json_out {
                        print_json(&v);
                    } else {
                        let mut t = Table::new(&[
                            "id", "reader", "merchant", "status", "inputs", "created",
                        ]);
                        for i in v.as_array().into_iter().flatten() {
                            t.row(vec![
                                or_dash(i["id"].as_str()),
                                or_dash(i["reader"].as_str()),
                                or_dash(i["merchant"].as_str()),
                                or_dash(i["status"].as_str()),
                                i["inputs"].as_array().map_or(0, Vec::len).to_string(),
                                or_dash(i["created_at"].as_str()),
                            ]);
                        }
                        t.print();
                    }
                }
                InputsAction::Show { id } => {
                    let v = c.get(&format!("/v1/input_collections/{id}")).await?;
                    if json_out {
                        print_json(&v);
                    } else {
                        println!(
                            "{} on {}: {}",
                            id,
                            or_dash(v["reader"].as_str()),
                            describe(&v)
                        );
                        print_answers(&v);
                    }
                }
                InputsAction::Cancel { id } => {
                    let v = c
                        .post_empty(&format!("/v1/input_collections/{id}/cancel"))
                        .await?;
                    if json_out {
                        print_json(&v);
                    } else {
                        println!("{id}: {}", describe(&v));
                    }
                }
            }
            Ok(())
        });
        if out != ExitCode::SUCCESS {
            return out;
        }
        code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_from_flags() {
        let v = build_inputs(
            &["email:Your email".into(), "selection:Pick one".into()],
            &["a=Apples".into(), "b=Pears".into()],
            true,
        )
        .unwrap();
        assert_eq!(v[0]["type"], "email");
        assert_eq!(v[0]["custom_text"]["title"], "Your email");
        assert_eq!(v[0]["required"], true);
        assert_eq!(v[1]["selection"]["choices"][1]["text"], "Pears");
        assert!(build_inputs(&[], &[], false).is_err());
        assert!(build_inputs(&["email".into()], &[], false).is_err());
        assert!(build_inputs(&["selection:Pick".into()], &[], false).is_err());
    }
}
