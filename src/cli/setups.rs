//! `readerd setups …`: cards saved on a reader for later payments (a hotel or rental desk
//! keeps a card on file). `create` queues a setup and follows it live over its event stream
//! until the card is saved (exit 0, the reusable payment method printed), refused, walked
//! away from or canceled (exit 1); Ctrl-C asks the daemon to cancel and keeps following.

use super::client::{
    block_on, follow_until_final, or_dash, print_json, ApiArgs, ApiClient, ClientError, Table,
};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct SetupsCmd {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(subcommand)]
    pub action: SetupsAction,
}

#[derive(Subcommand, Debug)]
pub enum SetupsAction {
    /// Save the card the customer presents on the reader, and follow it.
    Create {
        /// The reader (`tmr_…` or its label).
        #[arg(long)]
        reader: String,
        /// The merchant the card is saved for.
        #[arg(long)]
        merchant: String,
        /// The Stripe customer (`cus_…`) to attach the card to.
        #[arg(long)]
        customer: Option<String>,
        /// Whether the saved card may be shown to the customer again in a later checkout
        /// (Stripe's `allow_redisplay`; required).
        #[arg(long, value_parser = ["always", "limited", "unspecified"])]
        allow_redisplay: String,
        /// Queue it and return at once, without following it.
        #[arg(long)]
        no_follow: bool,
    },
    /// List setups (newest first, a page at a time).
    List {
        #[arg(long)]
        reader: Option<String>,
        /// At most this many (default 100).
        #[arg(long)]
        limit: Option<usize>,
        /// The last setup of the previous page.
        #[arg(long)]
        starting_after: Option<String>,
    },
    /// Show one setup with its payment method once saved.
    Show { id: String },
    /// Cancel a setup (our own action on the reader is cleared, the SetupIntent canceled).
    Cancel { id: String },
}

fn final_status(s: &str) -> bool {
    matches!(s, "succeeded" | "failed" | "canceled")
}

fn describe(v: &Value) -> String {
    match v["status"].as_str().unwrap_or("?") {
        "queued" => "queued: waiting for the reader".into(),
        "processing" => "on the reader: waiting for the customer's card…".into(),
        "succeeded" => format!(
            "succeeded: payment method {}",
            or_dash(v["payment_method"].as_str())
        ),
        "failed" => format!(
            "failed: {}",
            v["failure"]["message"].as_str().unwrap_or("unknown")
        ),
        other => other.to_string(),
    }
}

/// Follows a setup until it is final, printing each change.
async fn follow(c: &ApiClient, id: &str) -> Result<Value, ClientError> {
    let path = format!("/v1/setups/{id}");
    follow_until_final(c, &path, "setup", "a setup", describe, final_status).await
}

impl SetupsCmd {
    pub fn run(self) -> ExitCode {
        let mut code = ExitCode::SUCCESS;
        let json_out = self.api.json;
        let out = block_on(async {
            let c = ApiClient::new(&self.api)?;
            match self.action {
                SetupsAction::Create {
                    reader,
                    merchant,
                    customer,
                    allow_redisplay,
                    no_follow,
                } => {
                    let body = json!({
                        "merchant": merchant,
                        "reader": reader,
                        "customer": customer,
                        "allow_redisplay": allow_redisplay,
                    });
                    let v = c.post("/v1/setups", &body).await?;
                    let id = v["id"].as_str().unwrap_or_default().to_string();
                    if no_follow {
                        if json_out {
                            print_json(&v);
                        } else {
                            println!("setup {id} queued on {}", or_dash(v["reader"].as_str()));
                        }
                        return Ok(());
                    }
                    println!("setup {id} on {}", or_dash(v["reader"].as_str()));
                    let last = follow(&c, &id).await?;
                    if json_out {
                        print_json(&last);
                    }
                    if last["status"] != "succeeded" {
                        code = ExitCode::FAILURE;
                    }
                }
                SetupsAction::List {
                    reader,
                    limit,
                    starting_after,
                } => {
                    let mut q = form_urlencoded::Serializer::new(String::new());
                    if let Some(r) = &reader {
                        q.append_pair("reader", r);
                    }
                    if let Some(l) = limit {
                        q.append_pair("limit", &l.to_string());
                    }
                    if let Some(a) = &starting_after {
                        q.append_pair("starting_after", a);
                    }
                    let q = q.finish();
                    let path = if q.is_empty() {
                        "/v1/setups".to_string()
                    } else {
                        format!("/v1/setups?{q}")
                    };
                    let v = c.get(&path).await?;
                    if json_out {
                        print_json(&v);
                    } else {
                        let mut t = Table::new(&[
                            "id",
                            "reader",
                            "merchant",
                            "status",
                            "payment method",
                            "created",
                        ]);
                        for s in v.as_array().into_iter().flatten() {
                            t.row(vec![
                                or_dash(s["id"].as_str()),
                                or_dash(s["reader"].as_str()),
                                or_dash(s["merchant"].as_str()),
                                or_dash(s["status"].as_str()),
                                or_dash(s["payment_method"].as_str()),
                                or_dash(s["created_at"].as_str()),
                            ]);
                        }
                        t.print();
                    }
                }
                SetupsAction::Show { id } => {
                    let v = c.get(&format!("/v1/setups/{id}")).await?;
                    if json_out {
                        print_json(&v);
                    } else {
                        println!(
                            "{} on {}: {}",
                            id,
                            or_dash(v["reader"].as_str()),
                            describe(&v)
                        );
                        println!(
                            "merchant {}, customer {}, setup intent {}, allow_redisplay {}",
                            or_dash(v["merchant"].as_str()),
                            or_dash(v["customer"].as_str()),
                            or_dash(v["setup_intent"].as_str()),
                            or_dash(v["allow_redisplay"].as_str()),
                        );
                    }
                }
                SetupsAction::Cancel { id } => {
                    let v = c.post_empty(&format!("/v1/setups/{id}/cancel")).await?;
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
    fn a_saved_card_is_described_with_its_payment_method() {
        let v = json!({"status": "succeeded", "payment_method": "pm_1"});
        assert_eq!(describe(&v), "succeeded: payment method pm_1");
        let v = json!({"status": "failed", "failure": {"message": "refused"}});
        assert_eq!(describe(&v), "failed: refused");
        assert!(final_status("canceled") && !final_status("processing"));
    }
}
