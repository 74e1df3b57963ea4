//! Query strings, decoded strictly.
//!
//! `form_urlencoded` (behind `web::Query`) decodes leniently: `%ZZ` stays literally `%ZZ`
//! and `%FF` becomes U+FFFD, so a client's encoding mistake would silently filter on the
//! wrong text. Every route reads its parameters through [`pairs`] instead.

use crate::api::error::ApiError;
use crate::core::query::decode;

/// The `name=value` pairs of a query string, in order; a name without `=` has the value
/// `""`. A malformed `%` escape or a name or value that is not UTF-8 once decoded is a
/// `400 BAD_QUERY` naming the parameter.
pub fn pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(raw_name).map_err(|why| ApiError::bad_query(raw_name, why))?;
            let value = decode(raw_value).map_err(|why| ApiError::bad_query(&name, why))?;
            Ok((name, value))
        })
        .collect()
}

/// Whether a flag parameter is set: absent is `None`; given without a value (`?flag` or
/// `?flag=`) or as `true` is true; `false` is false; the last occurrence wins.
pub fn flag(pairs: &[(String, String)], name: &str) -> Result<Option<bool>, ApiError> {
    let mut value = None;
    for (_, v) in pairs.iter().filter(|(k, _)| k == name) {
        value = Some(match v.as_str() {
            "" | "true" => true,
            "false" => false,
            _ => {
                return Err(ApiError::bad_query(
                    name,
                    format!("must be true or false (or given without a value), not '{v}'"),
                ))
            }
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::error::ErrorCode;

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn decodes_escapes_and_plus() {
        assert_eq!(
            pairs("a=x%20y+z&b.c=%C3%A9&flag&e=").unwrap(),
            vec![
                pair("a", "x y z"),
                pair("b.c", "é"),
                pair("flag", ""),
                pair("e", "")
            ]
        );
        assert_eq!(pairs("").unwrap(), vec![]);
        assert_eq!(pairs("&&a=1&").unwrap(), vec![pair("a", "1")]);
    }

    #[test]
    fn bad_escapes_name_the_parameter() {
        for (query, name) in [
            ("status=%ZZ", "status"),
            ("status=abc%", "status"),
            ("status=%4", "status"),
            ("status=%FF", "status"),
            ("a=1&s%ZZ=1", "s%ZZ"),
        ] {
            let e = pairs(query).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadQuery, "{query}");
            assert!(
                e.message.starts_with(&format!("query parameter '{name}'")),
                "{query}: {}",
                e.message
            );
        }
    }

    #[test]
    fn flag_without_a_value_is_true() {
        let f = |q: &str| flag(&pairs(q).unwrap(), "p");
        assert_eq!(f("").unwrap(), None);
        assert_eq!(f("p").unwrap(), Some(true));
        assert_eq!(f("p=").unwrap(), Some(true));
        assert_eq!(f("p=true").unwrap(), Some(true));
        assert_eq!(f("p=false").unwrap(), Some(false));
        assert_eq!(f("p=true&p=false").unwrap(), Some(false));
        assert_eq!(f("p=yes").unwrap_err().code, ErrorCode::BadQuery);
    }
}
