//! The CloudEvents-style envelope around a POSTed TMF637 document or package.
//!
//! [`check_structure`] guards against hostile shapes (`$` keys, NUL in keys, deep nesting)
//! before anything else looks at a body; [`parse`] turns a body into an [`Envelope`] whose
//! headers are known to be valid (`docs/reference.md` §3.1), reporting every violation at once.

use std::ops::RangeInclusive;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde_json::{Map, Value};

use crate::core::schema::{excerpt, excerpt_str};
use crate::core::{pointer_token, EventId, Source, Violation, Violations};

/// Deepest nesting accepted anywhere in a body (the body itself is depth 1).
pub const MAX_DEPTH: usize = 64;

/// How many products a package (`value` as an array) holds.
pub const PACKAGE_SIZE: RangeInclusive<usize> = 3..=4;

/// The only accepted `datacontenttype` media type.
pub const CONTENT_TYPE: &str = "application/json";

/// `headers.time`: the instant, and the text as sent (echoed back unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTime {
    /// The instant, in UTC.
    pub instant: DateTime<Utc>,
    /// The string the source sent.
    pub raw: String,
}

impl EventTime {
    /// Parses an RFC 3339 date-time; a space may stand for the `T` (`2024-10-03 12:34:56.123Z`,
    /// as AT&T sources send it). The offset is required; the instant is converted to UTC and
    /// must fall in years 0000-9999 (see [`EventTime::in_range`]).
    pub fn parse(s: &str) -> Option<Self> {
        Self::parse_any_year(s).filter(|t| Self::in_range(t.instant))
    }

    /// Whether an instant can be written back as RFC 3339 UTC: a time such as
    /// `0000-01-01T00:00:00+10:18` is valid RFC 3339 text but its UTC instant falls in year
    /// -1, which RFC 3339 cannot express (nor `9999-12-31T23:00:00-05:00`, in year 10000).
    pub fn in_range(instant: DateTime<Utc>) -> bool {
        (0..=9999).contains(&instant.year())
    }

    fn parse_any_year(s: &str) -> Option<Self> {
        // Byte 10 is where the date ends; it is ASCII when it is a space, so slicing is safe.
        let normalised = if s.as_bytes().get(10) == Some(&b' ') {
            std::borrow::Cow::Owned(format!("{}T{}", &s[..10], &s[11..]))
        } else {
            std::borrow::Cow::Borrowed(s)
        };
        let instant = DateTime::parse_from_rfc3339(&normalised)
            .ok()?
            .with_timezone(&Utc);
        Some(Self {
            instant: without_leap_second(instant),
            raw: s.to_owned(),
        })
    }
}

/// A leap second (`23:59:60`, which RFC 3339 allows in input) as the instant that follows
/// it, the way POSIX time counts it: chrono would write it back as `:60`, which most RFC 3339
/// readers (and JSON Schema's `date-time`) refuse.
fn without_leap_second(instant: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = instant.nanosecond();
    if nanos < 1_000_000_000 {
        return instant;
    }
    instant
        .with_nanosecond(nanos - 1_000_000_000)
        .map_or(instant, |t| t + chrono::Duration::seconds(1))
}

/// The validated headers of an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Headers {
    /// `headers.id`.
    pub id: EventId,
    /// `headers.source`.
    pub source: Source,
    /// `headers.type`, one of the accepted types.
    pub event_type: String,
    /// `headers.time`.
    pub time: EventTime,
    /// A well-formed W3C `traceparent`, if one was sent (malformed ones are dropped).
    pub traceparent: Option<String>,
    /// The headers object exactly as sent, for echoing in responses.
    pub raw: Map<String, Value>,
}

impl Headers {
    /// The headers to echo in a response: as sent, with `id` replaced by `response_id`, and
    /// a malformed `traceparent` left out (`docs/reference.md` §3.1: it is ignored, a valid one is echoed).
    pub fn echoed(&self, response_id: &str) -> Map<String, Value> {
        let mut out = self.raw.clone();
        out.insert("id".to_owned(), Value::String(response_id.to_owned()));
        if self.traceparent.is_none() {
            out.remove("traceparent");
        }
        out
    }
}

/// The body's `value`: one product or a package of products.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// `value` was an object.
    Single(Value),
    /// `value` was an array of products.
    Package(Vec<Value>),
}

/// The products of a body, each with its JSON Pointer (`/value`, or `/value/0`,
/// `/value/1`...), the prefix [`crate::core::schema::Schemas::validate_product`] expects:
/// `value` when it is an object, else each object element of a `value` array. It reads the
/// body before it is parsed, so the schema check runs even when the headers are wrong and
/// one answer reports both.
pub fn raw_products(body: &Value) -> Vec<(String, &Value)> {
    match body.get("value") {
        Some(v @ Value::Object(_)) => vec![("/value".to_owned(), v)],
        Some(Value::Array(vs)) => vs
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_object())
            .map(|(i, v)| (format!("/value/{i}"), v))
            .collect(),
        _ => Vec::new(),
    }
}

/// A parsed POST body.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The headers.
    pub headers: Headers,
    /// The product(s).
    pub payload: Payload,
}

/// One step from a container to a child, kept so that pointers are only built for violations.
#[derive(Clone, Copy)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

enum Children<'a> {
    Object(serde_json::map::Iter<'a>),
    Array(std::iter::Enumerate<std::slice::Iter<'a, Value>>),
}

impl<'a> Children<'a> {
    fn of(v: &'a Value) -> Option<Self> {
        match v {
            Value::Object(m) => Some(Self::Object(m.iter())),
            Value::Array(a) => Some(Self::Array(a.iter().enumerate())),
            _ => None,
        }
    }

    fn next(&mut self) -> Option<(Step<'a>, &'a Value)> {
        match self {
            Self::Object(it) => it.next().map(|(k, v)| (Step::Key(k.as_str()), v)),
            Self::Array(it) => it.next().map(|(i, v)| (Step::Index(i), v)),
        }
    }
}

fn pointer_of(path: &[Step<'_>]) -> String {
    let mut out = String::new();
    for step in path {
        out.push('/');
        match step {
            Step::Key(k) => out.push_str(&pointer_token(k)),
            Step::Index(i) => out.push_str(&i.to_string()),
        }
    }
    out
}

/// Finds object keys that start with `$` or contain NUL, and nesting deeper than
/// [`MAX_DEPTH`], anywhere in `body`; one violation per offending place, past
/// [`crate::core::MAX_VIOLATIONS`] only counted.
///
/// Depth counts containers: the body is depth 1, an object or array inside it depth 2. A
/// container deeper than [`MAX_DEPTH`] is reported once and not entered, so the walk (an
/// explicit stack, never recursion) holds at most [`MAX_DEPTH`] frames whatever it is given.
pub fn check_structure(body: &Value) -> Violations {
    let mut out = Violations::new();
    // `frames[i]` iterates the children of the container at depth i + 1;
    // `path[i]` is the step from that container to the child being visited.
    let mut frames: Vec<Children<'_>> = Children::of(body).into_iter().collect();
    let mut path: Vec<Step<'_>> = Vec::new();
    while let Some(top) = frames.last_mut() {
        let Some((step, child)) = top.next() else {
            frames.pop();
            continue;
        };
        path.truncate(frames.len() - 1);
        path.push(step);
        if let Step::Key(key) = step {
            let problem = if key.starts_with('$') {
                Some("starts with '$'")
            } else if key.contains('\0') {
                Some("contains NUL")
            } else {
                None
            };
            if let Some(problem) = problem {
                out.push_with(|| {
                    let shown = excerpt(&Value::String(key.to_owned()));
                    Violation::new(
                        pointer_of(&path),
                        format!("key {shown} {problem}; such keys are not allowed"),
                    )
                });
            }
        }
        if let Some(children) = Children::of(child) {
            let depth = frames.len() + 1;
            if depth > MAX_DEPTH {
                out.push_with(|| {
                    Violation::new(
                        pointer_of(&path),
                        format!("nesting is deeper than {MAX_DEPTH} levels"),
                    )
                });
            } else {
                frames.push(children);
            }
        }
    }
    out
}

/// Parses a body into an envelope, checking every header rule. All violations are
/// reported, each with a JSON Pointer into the body.
///
/// Messages follow the schema module's style: `"time" is required`,
/// `"time": 5 is not a string`, `"time" must not be empty`, then rule-specific wording.
/// Unknown top-level keys are left to the envelope schema.
pub fn parse(body: Value, accepted_types: &[String]) -> Result<Envelope, Vec<Violation>> {
    let Value::Object(mut body) = body else {
        return Err(vec![Violation::new(
            "",
            format!("the body: {} is not an object", excerpt(&body)),
        )]);
    };
    let mut out = Vec::new();
    let headers = match body.remove("headers") {
        None => {
            out.push(Violation::new("/headers", "\"headers\" is required"));
            None
        }
        Some(Value::Object(raw)) => parse_headers(raw, accepted_types, &mut out),
        Some(other) => {
            out.push(Violation::new(
                "/headers",
                format!("\"headers\": {} is not an object", excerpt(&other)),
            ));
            None
        }
    };
    let payload = parse_value(body.remove("value"), &mut out);
    match (headers, payload) {
        (Some(headers), Some(payload)) if out.is_empty() => Ok(Envelope { headers, payload }),
        _ => Err(out),
    }
}

fn parse_value(value: Option<Value>, out: &mut Vec<Violation>) -> Option<Payload> {
    match value {
        None => {
            out.push(Violation::new("/value", "\"value\" is required"));
            None
        }
        Some(Value::Object(product)) => Some(Payload::Single(Value::Object(product))),
        Some(Value::Array(products)) => {
            let before = out.len();
            // Worded exactly as the envelope schema words minItems/maxItems, so that the
            // two reports of one problem can be deduplicated by equality.
            let (n, min, max) = (products.len(), *PACKAGE_SIZE.start(), *PACKAGE_SIZE.end());
            if n < min {
                out.push(Violation::new(
                    "/value",
                    format!("\"value\": has {n} items; at least {min} are required (minItems)"),
                ));
            } else if n > max {
                out.push(Violation::new(
                    "/value",
                    format!("\"value\": has {n} items; at most {max} are allowed (maxItems)"),
                ));
            }
            for (i, p) in products.iter().enumerate() {
                if !p.is_object() {
                    out.push(Violation::new(
                        format!("/value/{i}"),
                        format!("\"value\"[{i}]: {} is not an object", excerpt(p)),
                    ));
                }
            }
            (out.len() == before).then_some(Payload::Package(products))
        }
        Some(other) => {
            out.push(Violation::new(
                "/value",
                format!(
                    "\"value\": {} is not an array or an object",
                    excerpt(&other)
                ),
            ));
            None
        }
    }
}

fn parse_headers(
    raw: Map<String, Value>,
    accepted_types: &[String],
    out: &mut Vec<Violation>,
) -> Option<Headers> {
    let id = required(&raw, "id", out).and_then(|s| {
        EventId::parse(s)
            .map_err(|e| out.push(Violation::new("/headers/id", format!("\"id\" {e}"))))
            .ok()
    });
    let source = required(&raw, "source", out).and_then(|s| {
        Source::parse(s)
            .map_err(|e| out.push(Violation::new("/headers/source", format!("\"source\" {e}"))))
            .ok()
    });
    let event_type = required(&raw, "type", out).and_then(|s| {
        if accepted_types.iter().any(|t| t == s) {
            Some(s.to_owned())
        } else {
            let accepted: Vec<String> = accepted_types
                .iter()
                .map(|t| format!("\"{}\"", excerpt_str(t)))
                .collect();
            let accepted = if accepted.is_empty() {
                "none".to_owned()
            } else {
                accepted.join(", ")
            };
            out.push(Violation::new(
                "/headers/type",
                format!(
                    "\"type\": {} is not an accepted event type (accepted: {accepted})",
                    excerpt_str(&Value::String(s.to_owned()).to_string())
                ),
            ));
            None
        }
    });
    let time = required(&raw, "time", out).and_then(|s| {
        let parsed = EventTime::parse_any_year(s);
        if let Some(t) = parsed.as_ref().filter(|t| !EventTime::in_range(t.instant)) {
            out.push(Violation::new(
                "/headers/time",
                format!(
                    "\"time\": {} is {} in UTC, outside years 0000-9999",
                    excerpt(&Value::String(s.to_owned())),
                    t.instant
                        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                ),
            ));
            return None;
        }
        if parsed.is_none() {
            out.push(Violation::new(
                "/headers/time",
                format!(
                    "\"time\": {} is not an RFC 3339 date-time with an offset \
                     (e.g. \"2024-10-03T12:34:56.123Z\" or \"2024-10-03 12:34:56.123Z\")",
                    excerpt(&Value::String(s.to_owned()))
                ),
            ));
        }
        parsed
    });
    if let Some(ct) = required(&raw, "datacontenttype", out) {
        if !is_json_media_type(ct) {
            out.push(Violation::new(
                "/headers/datacontenttype",
                format!(
                    "\"datacontenttype\": {} must be \"{CONTENT_TYPE}\" \
                     (optionally with \"; charset=utf-8\")",
                    excerpt(&Value::String(ct.to_owned()))
                ),
            ));
        }
    }
    for name in ["version", "traceparent", "tracestate"] {
        optional(&raw, name, out);
    }
    let traceparent = raw
        .get("traceparent")
        .and_then(Value::as_str)
        .filter(|t| super::traceparent::is_valid(t))
        .map(str::to_owned);
    Some(Headers {
        id: id?,
        source: source?,
        event_type: event_type?,
        time: time?,
        traceparent,
        raw,
    })
}

/// A required non-empty string header; reports why it is not one.
fn required<'a>(
    raw: &'a Map<String, Value>,
    name: &str,
    out: &mut Vec<Violation>,
) -> Option<&'a str> {
    let pointer = format!("/headers/{}", pointer_token(name));
    match raw.get(name) {
        None => out.push(Violation::new(pointer, format!("\"{name}\" is required"))),
        Some(Value::String(s)) if s.is_empty() => out.push(Violation::new(
            pointer,
            format!("\"{name}\" must not be empty"),
        )),
        Some(Value::String(s)) => return Some(s),
        Some(other) => out.push(Violation::new(
            pointer,
            format!("\"{name}\": {} is not a string", excerpt(other)),
        )),
    }
    None
}

/// An optional header: absent, or a string.
fn optional(raw: &Map<String, Value>, name: &str, out: &mut Vec<Violation>) {
    if let Some(v) = raw.get(name).filter(|v| !v.is_string()) {
        out.push(Violation::new(
            format!("/headers/{}", pointer_token(name)),
            format!("\"{name}\": {} is not a string", excerpt(v)),
        ));
    }
}

/// `application/json`, any case, with at most a `charset=utf-8` parameter (the body has
/// already been read as UTF-8 JSON, so any other charset would be a lie). Whitespace around
/// the parts is HTTP's (spaces and tabs), as the envelope schema's pattern states it.
fn is_json_media_type(ct: &str) -> bool {
    let ows: &[char] = &[' ', '\t'];
    let mut parts = ct.split(';');
    let media = parts.next().unwrap_or_default().trim_matches(ows);
    if !media.eq_ignore_ascii_case(CONTENT_TYPE) {
        return false;
    }
    parts.all(|param| {
        let Some((name, value)) = param.split_once('=') else {
            return false;
        };
        let value = value.trim_matches(ows);
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        name.trim_matches(ows).eq_ignore_ascii_case("charset")
            && value.eq_ignore_ascii_case("utf-8")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leap_second_is_the_instant_that_follows_it() {
        let t = EventTime::parse("2016-12-31 23:59:60.5Z").unwrap();
        assert_eq!(t.raw, "2016-12-31 23:59:60.5Z");
        let written = t.instant.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        assert_eq!(written, "2017-01-01T00:00:00.500Z");
        // Found by schemathesis: a leap second in another offset was written back as `:60`.
        for sent in [
            "4318-02-25 23:53:60-12:45",
            "4318-02-25 23:53:60\u{2212}12:45",
        ] {
            let t = EventTime::parse(sent).unwrap();
            assert_eq!(
                t.instant.to_rfc3339(),
                "4318-02-26T12:39:00+00:00",
                "{sent}"
            );
        }
    }
    use serde_json::json;

    const SEED: &str = include_str!("../../docs/examples/seed-adi-request.json");
    const TYPE: &str = "com.att.c360dataPrep.tmf637.post.v5";
    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn accepted() -> Vec<String> {
        vec![TYPE.to_owned()]
    }

    fn seed() -> Value {
        serde_json::from_str(SEED).unwrap()
    }

    fn with_header(name: &str, value: Value) -> Value {
        let mut body = seed();
        body["headers"][name] = value;
        body
    }

    fn without_header(name: &str) -> Value {
        let mut body = seed();
        body["headers"].as_object_mut().unwrap().remove(name);
        body
    }

    fn errors(body: Value) -> Vec<Violation> {
        parse(body, &accepted()).expect_err("should be refused")
    }

    fn only_error(body: Value) -> Violation {
        let v = errors(body);
        assert_eq!(v.len(), 1, "{v:?}");
        v.into_iter().next().unwrap()
    }

    #[test]
    fn the_example_parses() {
        let env = parse(seed(), &accepted()).unwrap();
        assert_eq!(env.headers.id.as_str(), "41-1234567");
        assert_eq!(env.headers.source.as_str(), "billing");
        assert_eq!(env.headers.event_type, TYPE);
        assert_eq!(env.headers.time.raw, "2024-10-03 12:34:56.123Z");
        assert_eq!(
            env.headers.time.instant.to_rfc3339(),
            "2024-10-03T12:34:56.123+00:00"
        );
        // The example's traceparent is "...": malformed, so dropped.
        assert_eq!(env.headers.traceparent, None);
        assert_eq!(
            env.headers.raw,
            seed()["headers"].as_object().unwrap().clone()
        );
        assert_eq!(env.payload, Payload::Single(seed()["value"].clone()));
    }

    #[test]
    fn each_required_header_missing_is_reported_at_its_pointer() {
        for name in ["id", "source", "type", "time", "datacontenttype"] {
            assert_eq!(
                only_error(without_header(name)),
                Violation::new(
                    format!("/headers/{name}"),
                    format!("\"{name}\" is required")
                )
            );
        }
    }

    #[test]
    fn each_required_header_empty_is_refused() {
        for name in ["id", "source", "type", "time", "datacontenttype"] {
            assert_eq!(
                only_error(with_header(name, json!(""))),
                Violation::new(
                    format!("/headers/{name}"),
                    format!("\"{name}\" must not be empty")
                )
            );
        }
    }

    #[test]
    fn each_header_of_the_wrong_type_is_refused() {
        for name in [
            "id",
            "source",
            "type",
            "time",
            "datacontenttype",
            "version",
            "traceparent",
            "tracestate",
        ] {
            assert_eq!(
                only_error(with_header(name, json!(5))),
                Violation::new(
                    format!("/headers/{name}"),
                    format!("\"{name}\": 5 is not a string")
                )
            );
        }
    }

    #[test]
    fn optional_headers_may_be_absent() {
        let mut body = seed();
        let h = body["headers"].as_object_mut().unwrap();
        for name in ["version", "traceparent", "tracestate"] {
            h.remove(name);
        }
        assert!(parse(body, &accepted()).is_ok());
    }

    #[test]
    fn raw_products_are_the_object_products_of_value() {
        let single = json!({"value": {"a": 1}});
        assert_eq!(
            raw_products(&single),
            vec![("/value".to_owned(), &json!({"a": 1}))]
        );
        let package = json!({"value": [{"a": 1}, 2, {"b": 3}]});
        assert_eq!(
            raw_products(&package),
            vec![
                ("/value/0".to_owned(), &json!({"a": 1})),
                ("/value/2".to_owned(), &json!({"b": 3}))
            ]
        );
        assert!(raw_products(&json!({"value": "x"})).is_empty());
        assert!(raw_products(&json!([1])).is_empty());
    }

    #[test]
    fn bad_time_is_refused() {
        for bad in [
            "yesterday",
            "2024-10-03T12:34:56",
            "2024-10-03",
            "2024-13-03T12:34:56Z",
            "2024-10-03  12:34:56Z",
        ] {
            let v = only_error(with_header("time", json!(bad)));
            assert_eq!(v.pointer, "/headers/time");
            assert!(v.message.contains("is not an RFC 3339 date-time"), "{v:?}");
        }
    }

    #[test]
    fn time_outside_years_0000_to_9999_in_utc_is_refused() {
        for bad in [
            "0000-01-01T00:00:00+10:18",
            "9999-12-31T23:00:00-05:00",
            "0000-01-01 00:00:00.000+00:01",
        ] {
            let v = only_error(with_header("time", json!(bad)));
            assert_eq!(v.pointer, "/headers/time");
            assert!(v.message.contains("outside years 0000-9999"), "{v:?}");
            assert!(EventTime::parse(bad).is_none(), "{bad}");
        }
        for edge in [
            "0000-01-01T00:00:00Z",
            "0000-01-01T00:00:00-10:00",
            "9999-12-31T23:59:59.999Z",
            "9999-12-31T23:59:59.999+05:00",
        ] {
            let env = parse(with_header("time", json!(edge)), &accepted()).unwrap();
            assert!(EventTime::in_range(env.headers.time.instant), "{edge}");
        }
    }

    #[test]
    fn space_separated_time_is_accepted() {
        let env = parse(
            with_header("time", json!("2024-10-03 12:34:56Z")),
            &accepted(),
        )
        .unwrap();
        assert_eq!(
            env.headers.time.instant,
            "2024-10-03T12:34:56Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    #[test]
    fn time_with_offset_is_converted_to_utc_and_kept_raw() {
        let env = parse(
            with_header("time", json!("2024-10-03T14:34:56.5+02:00")),
            &accepted(),
        )
        .unwrap();
        assert_eq!(env.headers.time.raw, "2024-10-03T14:34:56.5+02:00");
        assert_eq!(
            env.headers.time.instant.to_rfc3339(),
            "2024-10-03T12:34:56.500+00:00"
        );
    }

    #[test]
    fn time_with_multibyte_text_does_not_panic() {
        let v = only_error(with_header("time", json!("2024-10-0é 12:34:56Z")));
        assert_eq!(v.pointer, "/headers/time");
    }

    #[test]
    fn wrong_datacontenttype_is_refused() {
        for bad in [
            "text/plain",
            "application/jsonx",
            "application/json; charset=latin1",
            "application/json; foo",
        ] {
            let v = only_error(with_header("datacontenttype", json!(bad)));
            assert_eq!(v.pointer, "/headers/datacontenttype");
            assert!(v.message.contains("must be \"application/json\""), "{v:?}");
        }
    }

    #[test]
    fn json_with_utf8_charset_any_case_is_accepted() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
        ] {
            assert!(
                parse(with_header("datacontenttype", json!(ok)), &accepted()).is_ok(),
                "{ok}"
            );
        }
    }

    #[test]
    fn unknown_type_is_refused_naming_the_accepted_ones() {
        let v = only_error(with_header("type", json!("com.example.other")));
        assert_eq!(
            v,
            Violation::new(
                "/headers/type",
                format!(
                    "\"type\": \"com.example.other\" is not an accepted event type \
                     (accepted: \"{TYPE}\")"
                )
            )
        );
    }

    #[test]
    fn source_with_bad_characters_is_refused_with_the_id_error() {
        assert_eq!(
            only_error(with_header("source", json!("bill:ing"))),
            Violation::new(
                "/headers/source",
                "\"source\" may contain only letters, digits, '.', '_' and '-'"
            )
        );
    }

    #[test]
    fn event_id_with_control_characters_is_refused() {
        assert_eq!(
            only_error(with_header("id", json!("a\nb"))),
            Violation::new("/headers/id", "\"id\" must not contain control characters")
        );
    }

    #[test]
    fn several_violations_are_reported_together() {
        let mut body = without_header("id");
        body["headers"]["time"] = json!("nope");
        body["headers"]["source"] = json!(7);
        body["value"] = json!([{}]);
        let pointers: Vec<String> = errors(body).into_iter().map(|v| v.pointer).collect();
        assert_eq!(
            pointers,
            ["/headers/id", "/headers/source", "/headers/time", "/value"]
        );
    }

    #[test]
    fn valid_traceparent_is_kept_and_echoed() {
        let env = parse(with_header("traceparent", json!(TRACEPARENT)), &accepted()).unwrap();
        assert_eq!(env.headers.traceparent.as_deref(), Some(TRACEPARENT));
        let echoed = env.headers.echoed("new-id");
        assert_eq!(echoed["traceparent"], json!(TRACEPARENT));
        assert_eq!(echoed["id"], json!("new-id"));
        assert_eq!(echoed["tracestate"], json!("..."));
    }

    #[test]
    fn malformed_traceparent_is_dropped_silently() {
        for bad in [
            "...",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let env = parse(with_header("traceparent", json!(bad)), &accepted())
                .unwrap_or_else(|v| panic!("{bad}: {v:?}"));
            assert_eq!(env.headers.traceparent, None, "{bad}");
            assert!(!env.headers.echoed("x").contains_key("traceparent"));
        }
    }

    #[test]
    fn future_traceparent_version_may_carry_extra_fields() {
        let t = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-abcd";
        let env = parse(with_header("traceparent", json!(t)), &accepted()).unwrap();
        assert_eq!(env.headers.traceparent.as_deref(), Some(t));
    }

    #[test]
    fn body_must_be_an_object_with_headers_and_value() {
        assert_eq!(
            errors(json!([1])),
            vec![Violation::new("", "the body: [1] is not an object")]
        );
        assert_eq!(
            errors(json!({})),
            vec![
                Violation::new("/headers", "\"headers\" is required"),
                Violation::new("/value", "\"value\" is required"),
            ]
        );
        let mut body = seed();
        body["headers"] = json!("h");
        assert_eq!(
            errors(body),
            vec![Violation::new(
                "/headers",
                "\"headers\": \"h\" is not an object"
            )]
        );
    }

    #[test]
    fn value_array_of_three_or_four_objects_is_a_package() {
        for n in [3, 4] {
            let mut body = seed();
            body["value"] = Value::Array(vec![json!({"name": "p"}); n]);
            let pointers: Vec<String> = raw_products(&body).into_iter().map(|(p, _)| p).collect();
            let env = parse(body, &accepted()).unwrap();
            let Payload::Package(products) = &env.payload else {
                panic!("not a package")
            };
            assert_eq!(products.len(), n);
            assert_eq!(pointers[n - 1], format!("/value/{}", n - 1));
        }
    }

    #[test]
    fn value_array_of_two_or_five_is_refused() {
        for (n, message) in [
            (0, "has 0 items; at least 3 are required (minItems)"),
            (2, "has 2 items; at least 3 are required (minItems)"),
            (5, "has 5 items; at most 4 are allowed (maxItems)"),
        ] {
            let mut body = seed();
            body["value"] = Value::Array(vec![json!({}); n]);
            assert_eq!(
                only_error(body),
                Violation::new("/value", format!("\"value\": {message}"))
            );
        }
    }

    #[test]
    fn overlapping_checks_are_worded_exactly_as_the_envelope_schema_words_them() {
        let schemas = crate::core::schema::Schemas::compile().unwrap();
        let mut bodies = vec![json!({}), json!({"headers": 1, "value": "x"})];
        for value in [
            json!([]),
            json!([{}, {}]),
            json!([{}, {}, {}, {}, {}]),
            json!([{}, 1, {}]),
        ] {
            let mut body = seed();
            body["value"] = value;
            bodies.push(body);
        }
        let mut body = without_header("time");
        body["headers"]["id"] = json!(1);
        body["headers"]["tracestate"] = json!(false);
        bodies.push(body);
        for body in bodies {
            let from_schema = schemas.validate_envelope(&body);
            let from_parse = errors(body.clone());
            assert!(!from_schema.is_empty(), "{body}");
            for v in from_schema.iter() {
                assert!(from_parse.contains(v), "{v:?} not in {from_parse:?}");
            }
        }
    }

    #[test]
    fn value_array_with_a_non_object_is_refused_at_the_element() {
        let mut body = seed();
        body["value"] = json!([{}, "x", {}]);
        assert_eq!(
            only_error(body),
            Violation::new("/value/1", "\"value\"[1]: \"x\" is not an object")
        );
    }

    #[test]
    fn value_of_another_type_is_refused() {
        let mut body = seed();
        body["value"] = json!(3);
        assert_eq!(
            only_error(body),
            Violation::new("/value", "\"value\": 3 is not an array or an object")
        );
    }

    /// `depth` nested arrays, innermost holding `leaf`, built without recursion.
    fn nested(depth: usize, leaf: Value) -> Value {
        let mut v = leaf;
        for _ in 0..depth {
            v = Value::Array(vec![v]);
        }
        v
    }

    /// Takes a deep value apart one level at a time: serde_json drops recursively.
    fn dismantle(mut v: Value) {
        while let Value::Array(mut a) = v {
            match a.pop() {
                Some(inner) => v = inner,
                None => break,
            }
        }
    }

    #[test]
    fn dollar_key_is_reported_at_any_depth() {
        let body = json!({"value": {"relatedParty": [{"a": 1}, {"$where": {"$ne": 1}}]}});
        assert_eq!(
            check_structure(&body),
            vec![
                Violation::new(
                    "/value/relatedParty/1/$where",
                    "key \"$where\" starts with '$'; such keys are not allowed"
                ),
                Violation::new(
                    "/value/relatedParty/1/$where/$ne",
                    "key \"$ne\" starts with '$'; such keys are not allowed"
                ),
            ]
        );
        assert_eq!(
            check_structure(&json!({"$set": 1})),
            vec![Violation::new(
                "/$set",
                "key \"$set\" starts with '$'; such keys are not allowed"
            )]
        );
    }

    #[test]
    fn a_megabyte_of_dollar_keys_reports_a_bounded_list() {
        let keys: Map<String, Value> = (0..90_000).map(|i| (format!("${i}"), json!(1))).collect();
        let v = check_structure(&json!({"value": keys}));
        assert_eq!(v.total(), 90_000);
        let v = v.into_vec();
        assert_eq!(v.len(), crate::core::MAX_VIOLATIONS + 1);
        assert_eq!(v[0].pointer, "/value/$0");
        assert_eq!(
            v[100],
            Violation::new("", "89900 more violations not shown")
        );
    }

    #[test]
    fn nul_in_key_is_reported() {
        let body = json!({"value": {"a\u{0}b/c": 1}});
        assert_eq!(
            check_structure(&body),
            vec![Violation::new(
                "/value/a\u{0}b~1c",
                "key \"a\\u0000b/c\" contains NUL; such keys are not allowed"
            )]
        );
    }

    #[test]
    fn dollar_inside_a_key_is_fine() {
        let body = json!({"value": {"price$": 1, "a$b": [{"x$": null}], "@type": "P"}});
        assert_eq!(check_structure(&body), vec![]);
        assert_eq!(check_structure(&seed()), vec![]);
    }

    #[test]
    fn depth_64_is_accepted_and_65_refused() {
        assert_eq!(check_structure(&nested(MAX_DEPTH, json!(1))), vec![]);
        let too_deep = nested(MAX_DEPTH + 1, json!({}));
        let v = check_structure(&too_deep);
        // The 65th container is the 64th nested array, reached by 64 steps of index 0.
        assert_eq!(
            v,
            vec![Violation::new(
                "/0".repeat(MAX_DEPTH),
                "nesting is deeper than 64 levels"
            )]
        );
    }

    #[test]
    fn each_too_deep_branch_is_reported_once() {
        let deep = nested(MAX_DEPTH + 5, json!(1));
        let body = json!({"a": deep.clone(), "b": deep});
        let v = check_structure(&body);
        let pointers: Vec<&str> = v.iter().map(|v| v.pointer.as_str()).collect();
        // `/a` is depth 2, so the 65th level is 63 more steps down.
        let tail = "/0".repeat(MAX_DEPTH - 1);
        assert_eq!(pointers, [format!("/a{tail}"), format!("/b{tail}")]);
        dismantle(body);
    }

    #[test]
    fn a_ten_thousand_deep_value_does_not_overflow_the_stack() {
        let deep = nested(10_000, json!({"$x": 1}));
        let v = check_structure(&deep);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].message, "nesting is deeper than 64 levels");
        dismantle(deep);
    }

    /// The envelope schema states the header rules the parser enforces (it is what
    /// `/openapi.json` shows clients): on every sample, the schema objects to a header
    /// exactly when the parser does. (Beyond the schema, by design: the event id's byte
    /// length, the accepted types and the UTC year range; samples avoid them.)
    #[test]
    fn envelope_schema_states_the_parsers_header_rules() {
        let schemas = crate::core::schema::Schemas::compile().unwrap();
        let samples: &[(&str, &[&str])] = &[
            (
                "id",
                &[
                    "",
                    "a",
                    "41-1234567",
                    "é ü",
                    "a\nb",
                    "a\u{7f}",
                    "a\u{85}",
                    "\u{a0}",
                ],
            ),
            (
                "source",
                &[
                    "",
                    "billing",
                    "a.b_c-D9",
                    "a b",
                    "a:b",
                    "é",
                    &"s".repeat(64),
                    &"s".repeat(65),
                ],
            ),
            (
                "time",
                &[
                    "",
                    "2024-10-03T12:34:56Z",
                    "2024-10-03 12:34:56.123Z",
                    "2024-10-03t12:34:56z",
                    "2024-10-03T12:34:56.1234567891+05:30",
                    "2024-10-03T12:34:56\u{2212}05:30",
                    "2024-10-03T23:59:60Z",
                    "2024-02-29T00:00:00Z",
                    "2000-02-29T00:00:00Z",
                    "1900-02-29T00:00:00Z",
                    "2023-02-29T00:00:00Z",
                    "2024-04-31T00:00:00Z",
                    "2024-13-01T00:00:00Z",
                    "2024-00-01T00:00:00Z",
                    "2024-10-03T24:00:00Z",
                    "2024-10-03T12:60:00Z",
                    "2024-10-03T12:34:61Z",
                    "2024-10-03T12:34:56",
                    "2024-10-03T12:34:56.Z",
                    "2024-10-03T12:34:56+24:00",
                    "2024-10-03T12:34:56+05:60",
                    "2024-10-03T12:34:56+0530",
                    "2024-10-03_12:34:56Z",
                    "2024-10-03T12:34:56Z ",
                    "24-10-03T12:34:56Z",
                ],
            ),
            (
                "datacontenttype",
                &[
                    "",
                    "application/json",
                    "Application/JSON",
                    " application/json\t",
                    "application/json; charset=utf-8",
                    "application/json;charset=\"UTF-8\"",
                    "application/json ; charset = utf-8 ; charset=utf-8",
                    "application/json; charset=latin1",
                    "application/json; charset=\" utf-8\"",
                    "application/json;",
                    "application/json; foo",
                    "application/jsonx",
                    "text/plain",
                    "\u{a0}application/json",
                    "application/json\u{2003}",
                ],
            ),
        ];
        for (name, values) in samples {
            let pointer = format!("/headers/{name}");
            for value in *values {
                let body = with_header(name, json!(value));
                let parser_objects = match parse(body.clone(), &accepted()) {
                    Ok(_) => false,
                    Err(v) => v.iter().any(|v| v.pointer == pointer),
                };
                let schema_objects = schemas
                    .validate_envelope(&body)
                    .iter()
                    .any(|v| v.pointer == pointer);
                assert_eq!(schema_objects, parser_objects, "{name}: {value:?}");
            }
        }
    }
}
