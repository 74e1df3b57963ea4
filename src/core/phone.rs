//! Subscriber numbers (CTN / MSISDN) in E.164 form, so that `1234567890`, `123-456-7890` and
//! `+11234567890` are one line.
//!
//! Only the North American Numbering Plan is assumed for national numbers (ten digits, or
//! eleven starting with `1`): the mobility systems PINV takes numbers from are AT&T's. A
//! number already in international form (`+` and 8 to 15 digits) is kept as it is. A full
//! numbering-plan library would bring per-country tables PINV has no use for.

/// The E.164 form of `number` (`+` and digits), or `None` when it is not a phone number.
///
/// Spaces, dots, hyphens and parentheses are ignored; anything else makes it not a number.
pub fn to_e164(number: &str) -> Option<String> {
    let trimmed = number.trim();
    let (international, rest) = match trimmed.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, trimmed),
    };
    let mut digits = String::with_capacity(rest.len());
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '.' | '-' | '(' | ')' => {}
            _ => return None,
        }
    }
    if international {
        return (8..=15)
            .contains(&digits.len())
            .then(|| format!("+{digits}"));
    }
    match digits.len() {
        10 => Some(format!("+1{digits}")),
        11 if digits.starts_with('1') => Some(format!("+{digits}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn national_and_international_forms_are_one_number() {
        for n in [
            "1234567890",
            "+11234567890",
            "11234567890",
            "(123) 456-7890",
            "123.456.7890",
        ] {
            assert_eq!(to_e164(n).as_deref(), Some("+11234567890"), "{n}");
        }
        assert_eq!(to_e164("+447911123456").as_deref(), Some("+447911123456"));
    }

    #[test]
    fn what_is_not_a_number_is_refused() {
        for n in [
            "",
            "12345",
            "21234567890",
            "abc1234567",
            "+12",
            "+1234567890123456",
            "12#4567890",
        ] {
            assert_eq!(to_e164(n), None, "{n}");
        }
    }
}
