//! `collect_inputs` on a reader's screen and the two test helpers that stand for the
//! customer: `succeed_input_collection` (answers) and `timeout_input_collection` (walks
//! away).

use super::*;
use crate::stripe::form::as_list;
use crate::stripe::wire::*;
use serde_json::Value;

/// What a reader shows when the customer walked away (the Terminal SDKs' error of the same
/// name; the server-driven `failure_code` is not documented).
pub const INPUTS_TIMED_OUT: &str = "collect_inputs_timed_out";

impl State {
    /// `collect_inputs`: 1 to 5 inputs, each with a type and a title; the reader must be free.
    pub fn collect_inputs(
        &mut self,
        scope: &Option<String>,
        id: &str,
        f: &Form,
        auto_answer: bool,
    ) -> Res<Value> {
        f.only(&["inputs", "metadata"])?;
        let expand = check_expand(f, Self::READER_EXPAND)?;
        let raw =
            f.0.get("inputs")
                .ok_or_else(|| SimError::missing("inputs"))?;
        let items = as_list(raw).ok_or_else(|| SimError::param(None, "inputs", "Invalid array"))?;
        if items.is_empty() || items.len() > 5 {
            return Err(SimError::param(
                None,
                "inputs",
                format!(
                    "inputs must hold between 1 and 5 inputs; {} were given.",
                    items.len()
                ),
            ));
        }
        let mut inputs = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            inputs.push(parse_input(i, &Form(item.clone()))?);
        }
        let mut metadata = Metadata::new();
        f.apply_metadata(&mut metadata)?;
        let rec = self.reader_ready(scope, id)?;
        rec.generation += 1;
        rec.obj.action = Some(ReaderAction {
            kind: ActionType::CollectInputs,
            status: ActionStatus::InProgress,
            failure_code: None,
            failure_message: None,
            api_error: None,
            process_payment_intent: None,
            set_reader_display: None,
            refund_payment: None,
            process_setup_intent: None,
            collect_inputs: Some(CollectInputsAction { inputs, metadata }),
            collect_payment_method: None,
            confirm_payment_intent: None,
        });
        let generation = rec.generation;
        if auto_answer {
            self.timers.push(Timer::Answer {
                reader: id.to_string(),
                generation,
            });
        }
        Ok(self.reader_view(id, &expand))
    }

    /// The reader's in-progress `collect_inputs`, or Stripe's refusal.
    fn collecting(&mut self, scope: &Option<String>, id: &str) -> Res<&mut ReaderRec> {
        let rec = self.reader_mut(scope, id)?;
        if !rec.online {
            return Err(SimError::reader_offline());
        }
        let collecting = rec.obj.action.as_ref().is_some_and(|a| {
            a.kind == ActionType::CollectInputs && a.status == ActionStatus::InProgress
        });
        if !collecting {
            return Err(SimError::invalid(
                None,
                format!("Reader {id} is not collecting inputs: it has no in-progress collect_inputs action."),
            ));
        }
        Ok(rec)
    }

    /// The test helper: the customer answers every input (the non-required ones skipped
    /// when `skip_non_required_inputs=all`).
    pub fn succeed_input_collection(
        &mut self,
        scope: &Option<String>,
        id: &str,
        f: &Form,
    ) -> Res<Value> {
        f.only(&["skip_non_required_inputs"])?;
        let expand = check_expand(f, Self::READER_EXPAND)?;
        let skip = match f.str(&["skip_non_required_inputs"]).unwrap_or("none") {
            "all" => true,
            "none" => false,
            other => {
                return Err(SimError::param(
                    None,
                    "skip_non_required_inputs",
                    format!(
                        "Invalid skip_non_required_inputs: must be one of all or none ({other})"
                    ),
                ))
            }
        };
        let rec = self.collecting(scope, id)?;
        rec.generation += 1;
        if let Some(a) = rec.obj.action.as_mut() {
            a.status = ActionStatus::Succeeded;
            if let Some(c) = a.collect_inputs.as_mut() {
                for input in &mut c.inputs {
                    answer(input, skip && input.required != Some(true));
                }
            }
        }
        let view = self.reader_view(id, &expand);
        self.emit("terminal.reader.action_succeeded", None, view.clone());
        Ok(view)
    }

    /// The test helper: the customer walks away; the action fails.
    pub fn timeout_input_collection(
        &mut self,
        scope: &Option<String>,
        id: &str,
        f: &Form,
    ) -> Res<Value> {
        f.only(&[])?;
        let expand = check_expand(f, Self::READER_EXPAND)?;
        let rec = self.collecting(scope, id)?;
        rec.generation += 1;
        if let Some(a) = rec.obj.action.as_mut() {
            a.status = ActionStatus::Failed;
            a.failure_code = Some(INPUTS_TIMED_OUT.into());
            a.failure_message = Some("The customer did not complete the inputs in time.".into());
        }
        let view = self.reader_view(id, &expand);
        self.emit("terminal.reader.action_failed", None, view.clone());
        Ok(view)
    }

    /// Auto-answer (the simulated customer of `--auto-present`): answers if the reader still
    /// collects the same action.
    pub fn auto_answer(&mut self, reader_id: &str, generation: u64) {
        let Some(rec) = self.readers.get(reader_id) else {
            return;
        };
        if rec.generation != generation || !rec.online {
            return;
        }
        let owner = rec.owner.clone();
        let _ = self.succeed_input_collection(&owner, reader_id, &Form::new(Value::Null));
    }
}

/// The value a simulated customer gives to each kind of input.
fn answer(input: &mut CollectedInput, skip: bool) {
    for t in &mut input.toggles {
        t.value = Some(
            t.default_value
                .clone()
                .unwrap_or_else(|| "disabled".to_string()),
        );
    }
    input.skipped = Some(skip);
    if skip {
        return;
    }
    let value = |v: &str| {
        Some(InputValue {
            value: Some(v.to_string()),
        })
    };
    match input.kind {
        InputType::Email => input.email = value("customer@example.com"),
        InputType::Numeric => input.numeric = value("42"),
        InputType::Phone => input.phone = value("+15555550123"),
        InputType::Text => input.text = value("Sample text"),
        InputType::Signature => input.signature = value("file_sim_signature"),
        InputType::Selection => {
            if let Some(sel) = input.selection.as_mut() {
                if let Some(first) = sel.choices.first() {
                    sel.id = first.id.clone();
                    sel.text = Some(first.text.clone());
                }
            }
        }
        InputType::Other(_) => {}
    }
}

fn check_len(name: &str, v: Option<&str>, max: usize) -> Res<Option<String>> {
    match v {
        Some(s) if s.chars().count() > max => Err(SimError::param(
            None,
            name,
            format!("{name} must be at most {max} characters long."),
        )),
        other => Ok(other.map(str::to_string)),
    }
}

/// One `inputs[i]` as Stripe checks it.
fn parse_input(i: usize, f: &Form) -> Res<CollectedInput> {
    let name = |k: &str| format!("inputs[{i}][{k}]");
    if let Some(map) = f.0.as_object() {
        let known = ["type", "custom_text", "required", "selection", "toggles"];
        if let Some(k) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(SimError::unknown_param(&name(k)));
        }
    }
    let kind = InputType::from(
        f.req_str(&["type"])
            .map_err(|_| SimError::missing(&name("type")))?
            .to_string(),
    );
    if let InputType::Other(t) = &kind {
        return Err(SimError::param(
            None,
            &name("type"),
            format!("Invalid type: must be one of email, numeric, phone, selection, signature, or text ({t})"),
        ));
    }
    let title = f
        .str(&["custom_text", "title"])
        .ok_or_else(|| SimError::missing(&format!("inputs[{i}][custom_text][title]")))?;
    let ct = |k: &str, max| {
        check_len(
            &format!("inputs[{i}][custom_text][{k}]"),
            f.str(&["custom_text", k]),
            max,
        )
    };
    let custom_text = InputCustomText {
        title: check_len(&format!("inputs[{i}][custom_text][title]"), Some(title), 40)?
            .unwrap_or_default(),
        description: ct("description", 500)?,
        submit_button: ct("submit_button", 30)?,
        skip_button: ct("skip_button", 14)?,
    };
    let required = f.bool(&["required"])?;
    let selection = match f.0.get("selection") {
        None => None,
        Some(sel) => {
            let choices = sel
                .get("choices")
                .and_then(as_list)
                .ok_or_else(|| SimError::missing(&format!("inputs[{i}][selection][choices]")))?;
            let mut out = Vec::new();
            for (j, c) in choices.into_iter().enumerate() {
                let c = Form(c.clone());
                let text = c.str(&["text"]).ok_or_else(|| {
                    SimError::missing(&format!("inputs[{i}][selection][choices][{j}][text]"))
                })?;
                out.push(InputChoice {
                    id: c.str(&["id"]).map(str::to_string),
                    text: text.to_string(),
                    style: c.str(&["style"]).map(str::to_string),
                });
            }
            Some(InputSelection {
                choices: out,
                id: None,
                text: None,
            })
        }
    };
    if kind == InputType::Selection && selection.as_ref().is_none_or(|s| s.choices.is_empty()) {
        return Err(SimError::missing(&format!(
            "inputs[{i}][selection][choices]"
        )));
    }
    let mut toggles = Vec::new();
    if let Some(ts) = f.0.get("toggles") {
        let ts =
            as_list(ts).ok_or_else(|| SimError::param(None, &name("toggles"), "Invalid array"))?;
        for (j, t) in ts.into_iter().enumerate() {
            let t = Form(t.clone());
            let at = |k: &str| format!("inputs[{i}][toggles][{j}][{k}]");
            let title = check_len(&at("title"), t.str(&["title"]), 50)?;
            let description = check_len(&at("description"), t.str(&["description"]), 50)?;
            if title.is_none() && description.is_none() {
                return Err(SimError::missing(&at("title")));
            }
            let default_value = t.str(&["default_value"]).map(str::to_string);
            if let Some(d) = &default_value {
                if d != "enabled" && d != "disabled" {
                    return Err(SimError::param(
                        None,
                        &at("default_value"),
                        format!("Invalid default_value: must be one of enabled or disabled ({d})"),
                    ));
                }
            }
            toggles.push(InputToggle {
                title,
                description,
                default_value,
                value: None,
            });
        }
    }
    Ok(CollectedInput {
        kind,
        custom_text: Some(custom_text),
        required,
        skipped: None,
        email: None,
        numeric: None,
        phone: None,
        text: None,
        signature: None,
        selection,
        toggles,
    })
}
