//! A small validator for request bodies against an OpenAPI 3.1 document's JSON Schemas
//! (the fakes use it to refuse what the real service would). Stricter than the spec in
//! one way: a field the spec doesn't name is an error when it carries a value, so a typo
//! in a field name can't pass silently; one at its default (null, false, an empty list
//! or object) is let through, as the real services ignore those.

use serde_json::Value;

pub struct Spec {
    doc: Value,
}

impl Spec {
    pub fn load(path: &str) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        Self {
            doc: serde_json::from_str(&text).expect("the spec is JSON"),
        }
    }

    /// The request body schema of `method path` (path as the spec writes it), JSON.
    pub fn request_schema(&self, method: &str, path: &str) -> &Value {
        &self.doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    }

    /// Problems of `value` against `schema`; empty when it fits.
    pub fn check(&self, schema: &Value, value: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        self.validate(schema, value, "$", true, &mut problems);
        problems
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        let mut s = schema;
        while let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let pointer = r.trim_start_matches('#');
            s = self
                .doc
                .pointer(pointer)
                .unwrap_or_else(|| panic!("dangling $ref {r}"));
        }
        s
    }

    /// Every property name an object schema allows, through `allOf` and `$ref`.
    fn property_names<'a>(&'a self, schema: &'a Value, names: &mut Vec<&'a str>) {
        let schema = self.resolve(schema);
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            names.extend(props.keys().map(String::as_str));
        }
        for part in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.property_names(part, names);
        }
    }

    fn validate(&self, schema: &Value, v: &Value, at: &str, closed: bool, out: &mut Vec<String>) {
        let schema = self.resolve(schema);
        if let Some(types) = schema.get("type") {
            let allowed: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !allowed.is_empty() && !allowed.iter().any(|t| is_type(v, t)) {
                out.push(format!("{at}: expected {allowed:?}, got {v}"));
                return;
            }
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.contains(v)
        {
            out.push(format!("{at}: {v} is not one of {options:?}"));
        }
        if let Some(c) = schema.get("const")
            && c != v
        {
            out.push(format!("{at}: must be {c}"));
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(branches) = schema.get(key).and_then(Value::as_array) {
                let fits = branches.iter().any(|b| {
                    let mut p = Vec::new();
                    self.validate(b, v, at, closed, &mut p);
                    p.is_empty()
                });
                if !fits {
                    // Report the closest branch, for a useful message.
                    let mut best: Option<Vec<String>> = None;
                    for b in branches {
                        let mut p = Vec::new();
                        self.validate(b, v, at, closed, &mut p);
                        if best.as_ref().is_none_or(|x| p.len() < x.len()) {
                            best = Some(p);
                        }
                    }
                    out.push(format!(
                        "{at}: fits none of {key} ({})",
                        best.unwrap_or_default().join("; ")
                    ));
                }
            }
        }
        if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
            for part in parts {
                self.validate(part, v, at, false, out);
            }
        }
        match v {
            Value::String(s) => {
                let n = s.chars().count() as u64;
                if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                    && n > max
                {
                    out.push(format!("{at}: longer than {max} characters"));
                }
                if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                    && n < min
                {
                    out.push(format!("{at}: shorter than {min} characters"));
                }
            }
            Value::Number(n) => {
                if let (Some(min), Some(x)) =
                    (schema.get("minimum").and_then(Value::as_f64), n.as_f64())
                    && x < min
                {
                    out.push(format!("{at}: below {min}"));
                }
                if let (Some(max), Some(x)) =
                    (schema.get("maximum").and_then(Value::as_f64), n.as_f64())
                    && x > max
                {
                    out.push(format!("{at}: above {max}"));
                }
            }
            Value::Array(items) => {
                if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                    && items.len() as u64 > max
                {
                    out.push(format!("{at}: more than {max} items"));
                }
                if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                    && (items.len() as u64) < min
                {
                    out.push(format!("{at}: fewer than {min} items"));
                }
                if let Some(item) = schema.get("items") {
                    for (i, x) in items.iter().enumerate() {
                        self.validate(item, x, &format!("{at}[{i}]"), true, out);
                    }
                }
            }
            Value::Object(fields) => {
                let props = schema.get("properties").and_then(Value::as_object);
                for name in schema
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    if !fields.contains_key(name) {
                        out.push(format!("{at}: missing required `{name}`"));
                    }
                }
                let extra = schema.get("additionalProperties");
                let mut allowed = Vec::new();
                self.property_names(schema, &mut allowed);
                for (name, x) in fields {
                    let path = format!("{at}.{name}");
                    if let Some(p) = props.and_then(|p| p.get(name)) {
                        self.validate(p, x, &path, true, out);
                    } else if let Some(extra) = extra.filter(|e| e.is_object()) {
                        self.validate(extra, x, &path, true, out);
                    } else if closed
                        && !is_default(x)
                        && !allowed.contains(&name.as_str())
                        && extra != Some(&Value::Bool(true))
                        && (props.is_some() || !allowed.is_empty())
                    {
                        out.push(format!("{path}: not a field the spec knows"));
                    }
                }
            }
            _ => {}
        }
    }
}

fn is_default(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "integer" => v.as_i64().is_some() || v.as_u64().is_some(),
        "number" => v.is_number(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    }
}
