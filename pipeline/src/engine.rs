//! The engine: a pipeline spec compiled once per revision (JSON Schemas, CEL
//! programs), then run on every event — governance once, then each destination's shaping.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sluice_proto::spec::{DestinationKind, DestinationSpec, PipelineSpec};

use crate::destinations::{self, Shape};
use crate::enrich::Enricher;
use crate::reject::Rejection;
use crate::{governance, path, pii, stages};

/// A pipeline at one revision, as a node runs it (and keeps it in its last-known-good file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedPipeline {
    pub id: String,
    pub name: String,
    pub revision: u64,
    pub spec: PipelineSpec,
}

/// A pipeline ready to run.
pub struct CompiledPipeline {
    pub id: String,
    pub name: String,
    pub revision: u64,
    governance: Vec<governance::Step>,
    pub destinations: Vec<CompiledDestination>,
    /// What the destinations' expressions read, together: what an event's shared bindings
    /// hold.
    pub needs: Needs,
    /// The archive dataset, when archiving is on.
    pub archive_dataset: Option<String>,
}

/// A destination's shaping, ready to run.
pub struct CompiledDestination {
    pub name: String,
    /// Its `deliver.…` and `dlq.…` stages.
    pub deliver_stage: String,
    pub dlq_stage: String,
    pub spec: Arc<DestinationSpec>,
    filter: Option<cel::Program>,
    computed: Vec<(String, cel::Program)>,
    /// What this destination's expressions read.
    needs: Needs,
    /// Its definition and settings, looked up once.
    kind: Option<DestinationKind>,
}

/// The variables CEL expressions read: each bound whole, or — for `properties`, `traits` and
/// `context` read only as `properties.revenue` — just those keys. Converting a whole event
/// into CEL values cost more than evaluating every expression of a pipeline.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Needs(std::collections::BTreeMap<String, Option<std::collections::BTreeSet<String>>>);

impl Needs {
    fn of(programs: &[&cel::Program]) -> Self {
        let mut needs = Self::default();
        for program in programs {
            needs.walk(program.expression());
        }
        needs
    }

    fn merge(&mut self, other: &Needs) {
        for (name, keys) in &other.0 {
            match keys {
                None => self.whole(name),
                Some(keys) => {
                    for key in keys {
                        self.key(name, key);
                    }
                }
            }
        }
    }

    fn whole(&mut self, name: &str) {
        self.0.insert(name.to_owned(), None);
    }

    fn key(&mut self, name: &str, key: &str) {
        if let Some(keys) = self
            .0
            .entry(name.to_owned())
            .or_insert_with(|| Some(Default::default()))
        {
            keys.insert(key.to_owned());
        }
    }

    fn walk(&mut self, expr: &cel::IdedExpr) {
        use cel::common::ast::{EntryExpr, Expr};
        match &expr.expr {
            Expr::Select(select) => match &select.operand.expr {
                Expr::Ident(name) if OBJECTS.contains(&name.as_str()) => {
                    self.key(name, &select.field);
                }
                _ => self.walk(&select.operand),
            },
            Expr::Ident(name) => self.whole(name),
            Expr::Call(call) => {
                if let Some(target) = &call.target {
                    self.walk(target);
                }
                for arg in &call.args {
                    self.walk(arg);
                }
            }
            Expr::Comprehension(c) => {
                for part in [
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ] {
                    self.walk(part);
                }
            }
            Expr::List(list) => list.elements.iter().for_each(|e| self.walk(e)),
            Expr::Map(map) => {
                for entry in &map.entries {
                    match &entry.expr {
                        EntryExpr::StructField(field) => self.walk(&field.value),
                        EntryExpr::MapEntry(entry) => {
                            self.walk(&entry.key);
                            self.walk(&entry.value);
                        }
                    }
                }
            }
            Expr::Struct(s) => {
                for entry in &s.entries {
                    match &entry.expr {
                        EntryExpr::StructField(field) => self.walk(&field.value),
                        EntryExpr::MapEntry(entry) => {
                            self.walk(&entry.key);
                            self.walk(&entry.value);
                        }
                    }
                }
            }
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }
}

/// What a destination makes of an event.
pub enum Shaped {
    /// Deliver this payload.
    Deliver(Vec<u8>),
    /// Not for this destination (no consent, filtered out, or nothing to send for its kind).
    Skip(SkipReason),
    /// Meant for it but not deliverable as it is: straight to its DLQ with the reason.
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    Consent,
    Filter,
    NotApplicable,
}

/// The variables CEL expressions see.
const VARIABLES: [&str; 8] = [
    "type",
    "event",
    "name",
    "user_id",
    "anonymous_id",
    "message_id",
    "source",
    "timestamp",
];
const OBJECTS: [&str; 3] = ["properties", "traits", "context"];

fn compile_expression(expression: &str, at: &str) -> Result<cel::Program, String> {
    cel::Program::compile(expression).map_err(|e| format!("{at}: {e}"))
}

impl CompiledPipeline {
    pub fn compile(pipeline: &AppliedPipeline) -> Result<Self, String> {
        let spec: &PipelineSpec = &pipeline.spec;
        let destinations = spec
            .destinations
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let filter = d
                    .filter
                    .as_deref()
                    .map(|f| compile_expression(f, &format!("destinations[{i}].filter")))
                    .transpose()?;
                let computed: Vec<(String, cel::Program)> = d
                    .computed
                    .iter()
                    .map(|(out, e)| {
                        compile_expression(e, &format!("destinations[{i}].computed.{out}"))
                            .map(|p| (out.clone(), p))
                    })
                    .collect::<Result<_, String>>()?;
                let programs: Vec<&cel::Program> = filter
                    .iter()
                    .chain(computed.iter().map(|(_, p)| p))
                    .collect();
                let needs = Needs::of(&programs);
                Ok(CompiledDestination {
                    name: d.name.clone(),
                    deliver_stage: stages::deliver(&pipeline.id, &d.name),
                    dlq_stage: stages::dlq(&pipeline.id, &d.name),
                    filter,
                    computed,
                    needs,
                    kind: d.kind(),
                    spec: Arc::new(d.clone()),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut needs = Needs::default();
        for destination in &destinations {
            needs.merge(&destination.needs);
        }
        Ok(Self {
            needs,
            id: pipeline.id.clone(),
            name: pipeline.name.clone(),
            revision: pipeline.revision,
            governance: governance::compile(&spec.governance)?,
            destinations,
            archive_dataset: spec.archive.enabled.then(|| spec.archive.dataset.clone()),
        })
    }

    /// Governance, once; `Err` is why the event is rejected.
    pub fn govern(
        &self,
        enricher: &Enricher,
        identity: &mut crate::identity::IdentityScope<'_>,
        event: &mut Map<String, Value>,
    ) -> Result<(), Rejection> {
        governance::run(&self.governance, enricher, identity, event)
    }
}

/// CEL's standard library, built once per batch (building it is far costlier than running
/// an expression); each event's variables live in an inner scope of it.
#[derive(Default)]
pub struct CelRoot(cel::Context<'static, 'static>);

/// The CEL variables of an event, built once per event and shared by its destinations.
pub struct Bindings<'r>(cel::Context<'r, 'static>);

impl<'r> Bindings<'r> {
    /// Binds what `needs` says the expressions read.
    pub fn of(root: &'r CelRoot, event: &Map<String, Value>, needs: &Needs) -> Self {
        let mut context = root.0.new_inner_scope();
        for (name, keys) in &needs.0 {
            let value = if VARIABLES.contains(&name.as_str()) {
                event.get(name).map_or(cel::Value::Null, cel_value)
            } else if OBJECTS.contains(&name.as_str()) {
                let object = event.get(name).and_then(Value::as_object);
                match (object, keys) {
                    (Some(object), None) => cel_map(object.iter()),
                    (Some(object), Some(keys)) => {
                        cel_map(keys.iter().filter_map(|k| object.get_key_value(k)))
                    }
                    (None, _) => cel_map(std::iter::empty()),
                }
            } else {
                // A comprehension's own variable, or a name CEL will say is unknown.
                continue;
            };
            context.add_variable_from_value(name.clone(), value);
        }
        Self(context)
    }
}

/// A JSON value as CEL sees it: what serialising it into CEL gives (an unsigned number is
/// `uint`, a negative one `int`, a fraction `double`), built directly — going through serde
/// (after a deep copy) was a third of binding an event.
fn cel_value(value: &Value) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => cel::Value::UInt(u),
            (None, Some(i)) => cel::Value::Int(i),
            (None, None) => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(cel_value).collect())),
        Value::Object(map) => cel_map(map.iter()),
    }
}

fn cel_map<'a>(entries: impl Iterator<Item = (&'a String, &'a Value)>) -> cel::Value {
    cel::Value::Map(cel::objects::Map {
        map: Arc::new(
            entries
                .map(|(k, v)| (cel::objects::Key::String(Arc::new(k.clone())), cel_value(v)))
                .collect(),
        ),
    })
}

impl CompiledDestination {
    /// Consent, filter, this destination's PII rules, mapping and computed fields, required
    /// fields, then the kind's own shape. `bindings`, shared by the event's destinations, is
    /// filled on first use with what `shared` (the pipeline's [`Needs`]) lists.
    pub fn shape<'r>(
        &self,
        root: &'r CelRoot,
        shared: &Needs,
        event: &Map<String, Value>,
        bindings: &mut Option<Bindings<'r>>,
    ) -> Shaped {
        if !consents(event, &self.spec.consent) {
            return Shaped::Skip(SkipReason::Consent);
        }
        if let Some(filter) = &self.filter {
            let bound = bindings.get_or_insert_with(|| Bindings::of(root, event, shared));
            match filter.execute(&bound.0) {
                Ok(cel::Value::Bool(true)) => {}
                Ok(cel::Value::Bool(false)) => return Shaped::Skip(SkipReason::Filter),
                Ok(other) => {
                    return Shaped::Invalid(format!("filter: not true or false but {other:?}"));
                }
                Err(e) => return Shaped::Invalid(format!("filter: {e}")),
            }
        }
        // This destination's copy: its PII rules must not touch what others receive.
        let mut own;
        let event = if self.spec.pii.is_empty() {
            event
        } else {
            own = event.clone();
            pii::apply(&self.spec.pii, &mut own);
            &own
        };
        let output = if self.spec.mapping.is_empty() && self.computed.is_empty() {
            None
        } else {
            let mut output = Map::new();
            for (out, input) in &self.spec.mapping {
                if let Some(value) = path::get(event, input) {
                    path::set(&mut output, out, value.clone());
                }
            }
            if !self.computed.is_empty() {
                // Computed fields see this destination's copy, after its PII rules.
                let local =
                    (!self.spec.pii.is_empty()).then(|| Bindings::of(root, event, &self.needs));
                let bound = match &local {
                    Some(local) => local,
                    None => bindings.get_or_insert_with(|| Bindings::of(root, event, shared)),
                };
                for (out, program) in &self.computed {
                    let value = match program.execute(&bound.0) {
                        Ok(value) => value,
                        Err(e) => return Shaped::Invalid(format!("computed.{out}: {e}")),
                    };
                    match value.json() {
                        Ok(json) => {
                            path::set(&mut output, out, json);
                        }
                        Err(e) => return Shaped::Invalid(format!("computed.{out}: {e}")),
                    }
                }
            }
            Some(output)
        };
        if let Some(missing) = self.spec.required.iter().find(|field| {
            let source = output.as_ref().unwrap_or(event);
            path::get(source, field).is_none_or(Value::is_null)
        }) {
            return Shaped::Invalid(format!("required field {missing} is missing"));
        }
        let Some(kind) = &self.kind else {
            return Shaped::Invalid("no destination kind".into());
        };
        match destinations::shape(kind, event, output) {
            Shape::Payload(payload) => Shaped::Deliver(payload),
            Shape::NotApplicable => Shaped::Skip(SkipReason::NotApplicable),
            Shape::Invalid(why) => Shaped::Invalid(why),
        }
    }

    pub fn kind(&self) -> Option<&DestinationKind> {
        self.kind.as_ref()
    }
}

/// Whether the event grants every category (`context.consent.categoryPreferences`).
fn consents(event: &Map<String, Value>, required: &[String]) -> bool {
    if required.is_empty() {
        return true;
    }
    let granted =
        path::get(event, "context.consent.categoryPreferences").and_then(Value::as_object);
    required.iter().all(|category| {
        granted
            .and_then(|g| g.get(category))
            .is_some_and(|v| v.as_bool() == Some(true))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sluice_proto::spec;

    use super::*;

    fn pipeline(spec_json: Value) -> CompiledPipeline {
        let spec = spec::parse_value(spec_json).expect("spec");
        spec.validate().expect("valid");
        CompiledPipeline::compile(&AppliedPipeline {
            id: "p".into(),
            name: "main".into(),
            revision: 1,
            spec,
        })
        .expect("compiles")
    }

    fn event(value: Value) -> Map<String, Value> {
        let Value::Object(map) = value else {
            unreachable!()
        };
        map
    }

    fn deliver(shaped: Shaped) -> Value {
        match shaped {
            Shaped::Deliver(bytes) => serde_json::from_slice(&bytes).expect("json"),
            Shaped::Skip(why) => panic!("skipped: {why:?}"),
            Shaped::Invalid(why) => panic!("invalid: {why}"),
        }
    }

    #[test]
    fn destinations_filter_map_compute_and_keep_their_pii_to_themselves() {
        let p = pipeline(json!({"sources": [{"name": "web"}], "destinations": [
            {"name": "crm", "consent": ["analytics"],
             "filter": "type == 'track' && event == 'Order Completed' && properties.revenue > 10.0",
             "pii": [{"fields": ["traits.email"], "action": "hash"}],
             "mapping": {"order.id": "properties.order_id", "email": "traits.email"},
             "computed": {"cents": "int(properties.revenue * 100.0)", "big": "properties.revenue > 100.0"},
             "required": ["order.id"],
             "webhook": {"url": "https://crm.example"}},
            {"name": "raw", "webhook": {"url": "https://raw.example"}}
        ]}));
        let order = event(
            json!({"type": "track", "event": "Order Completed", "message_id": "m",
            "properties": {"order_id": "o-1", "revenue": 42.5},
            "traits": {"email": "ada@example.com"},
            "context": {"consent": {"categoryPreferences": {"analytics": true}}}}),
        );
        let root = CelRoot::default();
        let mut bindings = None;
        let crm = deliver(p.destinations[0].shape(&root, &p.needs, &order, &mut bindings));
        assert_eq!(
            crm,
            json!({"order": {"id": "o-1"}, "email": pii::sha256_hex("ada@example.com"), "cents": 4250, "big": false})
        );
        let raw = deliver(p.destinations[1].shape(&root, &p.needs, &order, &mut bindings));
        assert_eq!(
            raw["traits"]["email"], "ada@example.com",
            "another destination's PII rule does not apply"
        );

        let mut no_consent = order.clone();
        no_consent.insert("context".into(), json!({}));
        assert!(matches!(
            p.destinations[0].shape(&root, &p.needs, &no_consent, &mut None),
            Shaped::Skip(SkipReason::Consent)
        ));
        let mut small = order.clone();
        small.insert(
            "properties".into(),
            json!({"order_id": "o-2", "revenue": 5.0}),
        );
        assert!(matches!(
            p.destinations[0].shape(&root, &p.needs, &small, &mut None),
            Shaped::Skip(SkipReason::Filter)
        ));
        let page = event(json!({"type": "page", "name": "Home",
            "context": {"consent": {"categoryPreferences": {"analytics": true}}}}));
        assert!(
            matches!(
                p.destinations[0].shape(&root, &p.needs, &page, &mut None),
                Shaped::Skip(SkipReason::Filter)
            ),
            "a missing variable is null, not an error"
        );
        let mut no_revenue = order.clone();
        no_revenue.insert("properties".into(), json!({"order_id": "o-3"}));
        assert!(
            matches!(p.destinations[0].shape(&root, &p.needs, &no_revenue, &mut None), Shaped::Invalid(ref why) if why.starts_with("filter:")),
            "a filter that cannot be evaluated is a reason, not a silent skip"
        );
        let mut no_id = order.clone();
        no_id.insert("properties".into(), json!({"revenue": 50.0}));
        assert!(matches!(
            p.destinations[0].shape(&root, &p.needs, &no_id, &mut None),
            Shaped::Invalid(ref why) if why == "required field order.id is missing"
        ));
    }

    #[test]
    fn expressions_bind_only_what_they_read() {
        let p = pipeline(json!({"sources": [{"name": "web"}], "destinations": [
            {"name": "a", "filter": "type == 'track' && has(properties.revenue) && context.page.url != ''",
             "webhook": {"url": "https://a.example"}},
            {"name": "b", "computed": {"n": "size(traits)"}, "webhook": {"url": "https://b.example"}}
        ]}));
        let names: Vec<(&str, Option<Vec<&str>>)> = p
            .needs
            .0
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    v.as_ref()
                        .map(|keys| keys.iter().map(String::as_str).collect()),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("context", Some(vec!["page"])),
                ("properties", Some(vec!["revenue"])),
                ("traits", None),
                ("type", None)
            ]
        );
    }

    #[test]
    fn json_becomes_what_serialising_it_into_cel_gives() {
        let value = json!({"u": 7, "i": -7, "f": 1.5, "big": u64::MAX, "s": "x", "b": true,
            "n": null, "list": [1, -1, 2.5, "y", [false], {"k": {}}], "o": {"p": {"q": "r"}}});
        assert_eq!(
            cel_value(&value),
            cel::to_value(&value).expect("serialises")
        );
    }

    #[test]
    fn governance_runs_once_before_any_destination() {
        let p = pipeline(json!({"sources": [{"name": "web"}],
            "governance": [{"step": "pii", "rules": [{"detect": ["email"], "action": "redact"}]}],
            "destinations": [{"name": "a", "webhook": {"url": "https://a.example"}}]}));
        let mut e = event(
            json!({"type": "track", "event": "x", "properties": {"note": "ada@example.com"}}),
        );
        p.govern(
            &Enricher::new(None),
            &mut crate::identity::IdentityScope::new(None),
            &mut e,
        )
        .expect("governed");
        let out = deliver(p.destinations[0].shape(&CelRoot::default(), &p.needs, &e, &mut None));
        assert_eq!(out["properties"]["note"], "[redacted]");
        assert_eq!(p.archive_dataset.as_deref(), Some("events"));
    }
}

#[cfg(test)]
mod shared {
    /// Processor workers share one compiled pipeline.
    #[test]
    fn compiled_pipelines_are_shareable() {
        fn shareable<T: Send + Sync>() {}
        shareable::<super::CompiledPipeline>();
        shareable::<crate::enrich::Enricher>();
    }
}
