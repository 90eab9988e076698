//! The API's OpenAPI 3.1 document (`GET /openapi.json`), generated from the handlers'
//! `#[utoipa::path]` annotations and the typed request and response bodies, so that it
//! cannot drift from what the code does.
//!
//! Every route of the daemon is listed in [`ApiDoc`]; the integration tests check that the
//! route table ([`super::Route`]) and the document's operations are the same set, that the
//! document equals the checked-in `docs/openapi.json`, that it passes an OpenAPI validator,
//! and that real answers match its schemas.
//!
//! Added to every operation here rather than by hand: the `Request-Id` header on every
//! answer, and a `default` answer in the error envelope (statuses not listed, such as a 500,
//! still answer in it).

use super::error::Envelope;
use super::{
    console, events, fleet, inputs, ops, payments, reader_refunds, setups, tipping, tokens,
    webhooks, Route,
};
use std::sync::OnceLock;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{HeaderBuilder, OpenApi as Document, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema};

/// The document's source: every handler and every schema.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "readerd",
        description = "The HTTP API of readerd, which runs shared Stripe Terminal smart readers for many Connect merchants. The prose, the examples and the rules are in docs/API.md; this document gives the shapes. Every answer carries a `Request-Id` header; every error is the `Envelope`."
    ),
    paths(
        ops::healthz,
        ops::readyz,
        ops::metrics,
        ops::openapi,
        webhooks::receive,
        fleet::add_merchant,
        fleet::list_merchants,
        fleet::show_merchant,
        fleet::check_merchant,
        fleet::create_location,
        fleet::list_locations,
        fleet::show_location,
        tipping::update_location,
        fleet::register_reader,
        fleet::list_readers,
        fleet::show_reader,
        fleet::update_reader,
        fleet::sync_readers,
        tokens::create,
        payments::create,
        payments::list,
        payments::show,
        payments::events,
        payments::cancel,
        payments::confirm,
        payments::capture,
        payments::retry,
        payments::refund,
        reader_refunds::show,
        reader_refunds::events,
        reader_refunds::cancel,
        payments::settlement,
        payments::display,
        payments::clear,
        inputs::create,
        inputs::list,
        inputs::show,
        inputs::events,
        inputs::cancel,
        setups::create,
        setups::list,
        setups::show,
        setups::events,
        setups::cancel,
        events::events,
        console::page,
        console::script,
        console::style,
    ),
    components(schemas(Envelope)),
    modifiers(&Common),
    tags(
        (name = "payments", description = "Payments and refunds"),
        (name = "readers", description = "Readers, their allowlists, carts and force-clear"),
        (name = "inputs", description = "Inputs on a reader's screen (an email, a choice, a signature)"),
        (name = "setups", description = "Cards saved on a reader for later payments (no charge)"),
        (name = "locations", description = "Stripe Terminal locations"),
        (name = "merchants", description = "Connected accounts readerd charges for (admin)"),
        (name = "connection tokens", description = "Tokens for points of sale that run a Terminal SDK"),
        (name = "operations", description = "Probes, metrics, this document and Stripe's webhooks (no token)"),
    )
)]
pub struct ApiDoc;

/// The bearer scheme, the `Request-Id` header and the `default` error answer.
struct Common;

impl Modify for Common {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        let request_id = HeaderBuilder::new()
            .schema(String::schema())
            .description(Some(
                "The request's id (`req_…`), also in error bodies and the daemon's log lines",
            ))
            .build();
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                op.responses.responses.insert(
                    "default".into(),
                    RefOr::T(
                        ResponseBuilder::new()
                            .description("Any other error, in the same envelope")
                            .content(
                                "application/json",
                                utoipa::openapi::ContentBuilder::new()
                                    .schema(Some(RefOr::Ref(
                                        utoipa::openapi::Ref::from_schema_name("Envelope"),
                                    )))
                                    .build(),
                            )
                            .build(),
                    ),
                );
                for response in op.responses.responses.values_mut() {
                    if let RefOr::T(r) = response {
                        r.headers.insert("Request-Id".into(), request_id.clone());
                    }
                }
            }
        }
    }
}

/// The document.
pub fn document() -> Document {
    ApiDoc::openapi()
}

/// The document as served: pretty JSON, built once.
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut s = document()
            .to_pretty_json()
            .expect("the OpenAPI document serialises");
        s.push('\n');
        s
    })
}

/// Every method and path the document describes, in the route table's form (its paths
/// are written as the router declares them).
pub fn operations(doc: &Document) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (method, op) in [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("DELETE", &item.delete),
            ("PATCH", &item.patch),
        ] {
            if op.is_some() {
                out.push((method.to_string(), path.clone()));
            }
        }
    }
    out.sort();
    out
}

/// The routes of `table` that the document lacks, and the operations it has that no route
/// serves.
pub fn differences(table: &[Route]) -> (Vec<String>, Vec<String>) {
    let documented = operations(&document());
    let served: Vec<(String, String)> = table
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    let undocumented = served
        .iter()
        .filter(|r| !documented.contains(r))
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    let unserved = documented
        .iter()
        .filter(|r| !served.contains(r))
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    (undocumented, unserved)
}
