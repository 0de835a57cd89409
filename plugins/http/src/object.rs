//! `http.resource`: a JSON object behind a REST API.
//!
//! Found by its URL (a natural key: `PUT /api/users/alice` is an idempotent upsert), or —
//! when the server assigns ids on create — by a search: `find: {key: /name}` lists the
//! collection at `url` and takes the one element whose `key` equals the body's (none:
//! absent; several: an error), then reads it at `url/<id>`. A search, not a remembered
//! id, because `read` receives the desired properties only: the object is found again
//! from what the manifest says, on a fresh machine, after a lost state, and by `drift`.
//!
//! Compared on the fields the body declares only (`compare: subset`, the default), so a
//! server's own fields (`id`, `created_at`, `version`, links) never cause a diff; numbers
//! compare by value, arrays whole; `ignore` lists pointers never compared; `compare:
//! exact` also reports fields the server has and the body lacks. The state is the
//! object's URL and the server's document.

use crate::wire;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tenet_sdk::{Diagnostic, Diff, Ensure, Error, FieldChange, KindInfo, from_value};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How a missing object is created.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
enum CreateMethod {
    Put,
    Post,
}

/// How a differing object is updated.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
enum UpdateMethod {
    /// The body replaces the object.
    #[default]
    Put,
    /// The body is sent as a JSON merge patch: only the declared fields change.
    Patch,
}

/// What is compared.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Compare {
    /// Only the fields the body declares.
    #[default]
    Subset,
    /// Also the fields the server has and the body lacks.
    Exact,
}

/// Finding an object whose id the server assigned.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Find {
    /// JSON pointer (into the body, and into each listed element) of the field that
    /// identifies the object, e.g. `/name`.
    #[schemars(length(min = 2))]
    key: String,
    /// Where the list is in the collection's response (`""`, the default: the response
    /// is the list), e.g. `/items`.
    #[serde(default)]
    list: String,
    /// Where the server's id is in an element (default `/id`); the object is at `url/<id>`.
    #[serde(default = "default_id")]
    id: String,
}

fn default_id() -> String {
    "/id".into()
}

/// The desired properties of `http.resource`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Object {
    /// The object's URL — or, with `find`, its collection's (the origin must be granted
    /// with `net:`).
    #[schemars(length(min = 1))]
    url: String,
    /// The desired JSON object.
    #[serde(default)]
    body: Map<String, Value>,
    /// `present` (default) or `absent`.
    #[serde(default)]
    ensure: Ensure,
    /// The server assigns ids: find the object in the collection at `url`.
    #[serde(default)]
    find: Option<Find>,
    /// PUT to `url` (the default without `find`) or POST to the collection (with `find`).
    #[serde(default)]
    create_method: Option<CreateMethod>,
    /// PUT (default) or PATCH.
    #[serde(default)]
    update_method: UpdateMethod,
    /// `subset` (default) or `exact`.
    #[serde(default)]
    compare: Compare,
    /// JSON pointers into the body never compared (e.g. `/metadata/generation`).
    #[serde(default)]
    ignore: Vec<String>,
    /// Request headers. Never shown or stored in clear; credentials belong on the net
    /// grant instead, where the provider never sees them.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Longest wait for each request, e.g. `30s` (the default).
    #[serde(default)]
    timeout: Option<String>,
}

pub fn kind() -> KindInfo {
    let mut k = KindInfo::of::<Object>(
        "resource",
        "a JSON object behind a REST API, compared on the fields the manifest declares",
        "url",
    );
    wire::hide_headers(&mut k);
    k
}

impl Object {
    fn timeout(&self) -> Duration {
        wire::duration_or(self.timeout.as_deref(), DEFAULT_TIMEOUT)
    }

    fn send(
        &self,
        method: &str,
        url: &str,
        body: Option<&Value>,
    ) -> Result<tenet_sdk::http::Response, Error> {
        wire::send(method, url, &self.headers, body, self.timeout()).map_err(Error::from)
    }
}

pub fn validate(properties: &Value) -> Vec<Diagnostic> {
    let o: Object = match from_value(properties) {
        Ok(o) => o,
        Err(e) => return vec![Diagnostic::error("", e.message())],
    };
    let mut out = Vec::new();
    if let Some(Err(e)) = o.timeout.as_deref().map(wire::duration) {
        out.push(Diagnostic::error("/timeout", e));
    }
    for (i, p) in o.ignore.iter().enumerate() {
        if !p.starts_with('/') {
            out.push(Diagnostic::error(
                &format!("/ignore/{i}"),
                format!("`{p}` is not a JSON pointer into the body (e.g. `/metadata/version`)"),
            ));
        }
    }
    if let Some(f) = &o.find {
        for (field, p) in [("key", &f.key), ("id", &f.id)] {
            if !p.starts_with('/') {
                out.push(Diagnostic::error(
                    &format!("/find/{field}"),
                    format!("`{p}` is not a JSON pointer (e.g. `/name`)"),
                ));
            }
        }
        if !(f.list.is_empty() || f.list.starts_with('/')) {
            out.push(Diagnostic::error(
                "/find/list",
                format!("`{}` is not a JSON pointer (e.g. `/items`)", f.list),
            ));
        }
        if f.key.starts_with('/') && Value::Object(o.body.clone()).pointer(&f.key).is_none() {
            out.push(Diagnostic::error(
                "/find/key",
                format!(
                    "the body has no `{}`: the object is found by that field's value",
                    f.key
                ),
            ));
        }
        if o.create_method == Some(CreateMethod::Put) {
            out.push(Diagnostic::error(
                "/create_method",
                "with `find` the server assigns the id: objects are created with POST to the collection",
            ));
        }
    }
    out
}

/// An id as one path segment.
fn segment(id: &str) -> String {
    let mut out = String::new();
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The object's URL and the server's document, or `None` when absent.
fn locate(o: &Object) -> Result<Option<(String, Value)>, Error> {
    let Some(find) = &o.find else {
        return get(o, &o.url);
    };
    let listing = o.send("GET", &o.url, None)?;
    if !(200..300).contains(&listing.status) {
        return Err(wire::status_error("GET", &o.url, &listing));
    }
    let doc = wire::json("GET", &o.url, &listing)?;
    // One page is all `find` searches: on a paginated collection "not on this page"
    // would look like "absent" and create a duplicate every run.
    let linked = listing
        .header("link")
        .is_some_and(|l| l.to_ascii_lowercase().contains("rel=\"next\""));
    let cursor = ["next", "next_page", "nextPageToken", "next_cursor"]
        .iter()
        .find(|k| {
            doc.get(**k)
                .is_some_and(|v| !(v.is_null() || v == "" || v == false))
        });
    if linked || cursor.is_some() {
        return Err(Error::Conflict(format!(
            "GET {} answered one page of a paginated collection ({}): `find` searches a single page, so an object on another would look absent; use a query in `url` that selects it (e.g. `?name=…`), or a natural-key URL",
            o.url,
            cursor.map_or_else(
                || "a Link: rel=\"next\" header".to_owned(),
                |k| format!("`{k}` in the body")
            )
        )));
    }
    let Some(items) = doc.pointer(&find.list).and_then(Value::as_array) else {
        return Err(Error::Conflict(format!(
            "GET {} did not answer with a list at `{}` (set `find.list` to where the list is)",
            o.url, find.list
        )));
    };
    let body = Value::Object(o.body.clone());
    let want = body
        .pointer(&find.key)
        .ok_or_else(|| Error::InvalidInput(format!("the body has no `{}`", find.key)))?;
    let found: Vec<&Value> = items
        .iter()
        .filter(|e| e.pointer(&find.key).is_some_and(|v| same(v, want)))
        .collect();
    let element = match found.as_slice() {
        [] => return Ok(None),
        [one] => *one,
        many => {
            return Err(Error::Conflict(format!(
                "{} elements of {} have {} = {want}: the key must pick one object",
                many.len(),
                o.url,
                find.key
            )));
        }
    };
    let id = match element.pointer(&find.id) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(Error::Conflict(format!(
                "the element of {} with {} = {want} has no id at `{}`",
                o.url, find.key, find.id
            )));
        }
    };
    let url = format!("{}/{}", o.url.trim_end_matches('/'), segment(&id));
    get(o, &url)
}

fn get(o: &Object, url: &str) -> Result<Option<(String, Value)>, Error> {
    let r = o.send("GET", url, None)?;
    match r.status {
        404 | 410 => Ok(None),
        200..=299 => Ok(Some((url.to_owned(), wire::json("GET", url, &r)?))),
        _ => Err(wire::status_error("GET", url, &r)),
    }
}

pub fn read(properties: &Value) -> Result<Option<Value>, Error> {
    let o: Object = from_value(properties)?;
    Ok(locate(&o)?.map(|(url, body)| json!({"url": url, "body": body})))
}

/// Equal as JSON values, numbers by value (1 == 1.0).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The differences between the declared `want` and the server's `have`, at `at`.
fn compare(want: &Value, have: Option<&Value>, at: &str, o: &Object, out: &mut Vec<FieldChange>) {
    if o.ignore.iter().any(|i| i == at) {
        return;
    }
    match (want, have) {
        (Value::Object(w), Some(Value::Object(h))) => {
            for (k, v) in w {
                compare(v, h.get(k), &format!("{at}/{}", escape(k)), o, out);
            }
            if o.compare == Compare::Exact {
                for (k, v) in h.iter().filter(|(k, _)| !w.contains_key(*k)) {
                    let p = format!("{at}/{}", escape(k));
                    if !o.ignore.contains(&p) {
                        out.push(change(&p, Some(v.clone()), None));
                    }
                }
            }
        }
        (w, Some(h)) if same(w, h) => {}
        (w, h) => out.push(change(at, h.cloned(), Some(w.clone()))),
    }
}

fn change(at: &str, before: Option<Value>, after: Option<Value>) -> FieldChange {
    FieldChange {
        path: format!("/body{at}"),
        before,
        after,
        forces_replacement: false,
    }
}

pub fn diff(desired: &Value, current: Option<&Value>) -> Result<Diff, Error> {
    let o: Object = from_value(desired)?;
    match (o.ensure, current) {
        (Ensure::Absent, None) => Ok(Diff::none()),
        (Ensure::Absent, Some(_)) => Ok(Diff {
            action: tenet_sdk::Action::Delete,
            changes: Vec::new(),
        }),
        (Ensure::Present, None) => Ok(Diff {
            action: tenet_sdk::Action::Create,
            changes: vec![FieldChange::new("body", None, Some(Value::Object(o.body)))],
        }),
        (Ensure::Present, Some(cur)) => {
            let mut changes = Vec::new();
            compare(
                &Value::Object(o.body.clone()),
                cur.get("body"),
                "",
                &o,
                &mut changes,
            );
            Ok(Diff::from_changes(changes))
        }
    }
}

pub fn apply(desired: &Value, current: Option<&Value>) -> Result<Value, Error> {
    let o: Object = from_value(desired)?;
    let body = Value::Object(o.body.clone());
    let (method, url) = match current.and_then(|c| c.get("url")).and_then(Value::as_str) {
        Some(url) => (
            match o.update_method {
                UpdateMethod::Put => "PUT",
                UpdateMethod::Patch => "PATCH",
            },
            url.to_owned(),
        ),
        None => match (o.create_method, &o.find) {
            (Some(CreateMethod::Post), _) | (None, Some(_)) => ("POST", o.url.clone()),
            _ => ("PUT", o.url.clone()),
        },
    };
    let r = o.send(method, &url, Some(&body))?;
    if !(200..300).contains(&r.status) {
        return Err(wire::status_error(method, &url, &r));
    }
    // The state is what the server keeps, read back (not what it echoed).
    match locate(&o)? {
        Some((url, body)) => Ok(json!({"url": url, "body": body})),
        None => Err(Error::Conflict(format!(
            "{method} {url} answered {}, but the object cannot be found afterwards{}",
            r.status,
            if o.find.is_some() {
                " (does the collection list it with the body's key?)"
            } else {
                ""
            }
        ))),
    }
}

pub fn delete(current: &Value) -> Result<(), Error> {
    let url = current
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::InvalidInput("the state names no URL".into()))?;
    let o = Object {
        url: url.to_owned(),
        body: Map::new(),
        ensure: Ensure::Absent,
        find: None,
        create_method: None,
        update_method: UpdateMethod::Put,
        compare: Compare::Subset,
        ignore: Vec::new(),
        headers: BTreeMap::new(),
        timeout: None,
    };
    let r = o.send("DELETE", url, None)?;
    match r.status {
        200..=299 | 404 | 410 => Ok(()),
        _ => Err(wire::status_error("DELETE", url, &r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(extra: Value) -> Object {
        let mut v = json!({"url": "http://127.0.0.1:1/api/x", "body": {"name": "web", "replicas": 3, "tags": ["a"], "spec": {"port": 80}}});
        if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        from_value(&v).expect("object")
    }

    #[test]
    fn server_added_fields_never_differ() {
        let o = object(json!({}));
        let cur = json!({"body": {"id": 7, "name": "web", "replicas": 3.0, "tags": ["a"], "spec": {"port": 80, "proto": "tcp"}, "created_at": "now"}});
        let d = diff(
            &serde_json::to_value(json!({"url": o.url, "body": o.body})).expect("v"),
            Some(&cur),
        )
        .expect("diff");
        assert_eq!(d, Diff::none());
    }

    #[test]
    fn declared_fields_differ_deeply_and_exact_reports_extras() {
        let desired = json!({"url": "http://h/x", "body": {"name": "web", "spec": {"port": 81}, "tags": ["a", "b"]}});
        let cur = json!({"body": {"name": "web", "spec": {"port": 80}, "tags": ["a"], "id": 1}});
        let d = diff(&desired, Some(&cur)).expect("diff");
        let paths: Vec<&str> = d.changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, vec!["/body/spec/port", "/body/tags"]);
        let mut exact = desired.clone();
        exact["compare"] = json!("exact");
        exact["ignore"] = json!(["/tags"]);
        let d = diff(&exact, Some(&cur)).expect("diff");
        let paths: Vec<&str> = d.changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, vec!["/body/spec/port", "/body/id"]);
    }

    #[test]
    fn absent_and_missing() {
        let desired = json!({"url": "http://h/x", "body": {"a": 1}});
        assert_eq!(
            diff(&desired, None).expect("diff").action,
            tenet_sdk::Action::Create
        );
        let gone = json!({"url": "http://h/x", "ensure": "absent"});
        assert_eq!(diff(&gone, None).expect("diff"), Diff::none());
        assert_eq!(
            diff(&gone, Some(&json!({"url": "http://h/x", "body": {}})))
                .expect("diff")
                .action,
            tenet_sdk::Action::Delete
        );
    }

    #[test]
    fn find_needs_its_key_in_the_body_and_post() {
        let d = validate(&json!({"url": "http://h/items", "body": {"title": "x"},
            "find": {"key": "/name"}, "create_method": "PUT"}));
        let paths: Vec<&str> = d.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, vec!["/find/key", "/create_method"]);
    }

    #[test]
    fn ids_are_one_escaped_segment() {
        assert_eq!(segment("a b/../c"), "a%20b%2F..%2Fc");
        assert_eq!(segment("42"), "42");
    }
}
