//! W3C Trace Context `traceparent` (`version-traceid-parentid-flags`): the one parser used for
//! the envelope's header and the HTTP header alike.

/// The trace id of a well-formed `traceparent`, or `None` when it is malformed (a malformed one
/// is ignored, never an error: see `docs/reference.md` §3.1).
///
/// Lowercase hex, version `ff` forbidden, ids not all zero. Version `00` is exactly 55
/// characters; a later version may append `-`-separated fields, which are ignored as the
/// specification asks.
pub fn trace_id(t: &str) -> Option<&str> {
    let b = t.as_bytes();
    let hex = |s: &[u8]| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let zero = |s: &[u8]| s.iter().all(|&c| c == b'0');
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let (version, trace_id, parent_id, flags) = (&b[0..2], &b[3..35], &b[36..52], &b[53..55]);
    let rest_ok = match version {
        b"00" => b.len() == 55,
        _ => b.len() == 55 || b[55] == b'-',
    };
    let ok = hex(version)
        && version != b"ff"
        && hex(trace_id)
        && !zero(trace_id)
        && hex(parent_id)
        && !zero(parent_id)
        && hex(flags)
        && rest_ok;
    // The checks above were on ASCII bytes, so 3..35 is a char boundary.
    ok.then(|| &t[3..35])
}

/// Whether `traceparent` is well-formed.
pub fn is_valid(traceparent: &str) -> bool {
    trace_id(traceparent).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_traceparent_gives_its_trace_id() {
        assert_eq!(
            trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn later_versions_may_append_fields() {
        assert!(is_valid(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"
        ));
        assert!(!is_valid(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"
        ));
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for t in [
            "...",
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0é",
        ] {
            assert!(!is_valid(t), "{t}");
        }
    }
}
