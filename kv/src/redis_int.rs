//! Integers in the text form Redis accepts for INCRBY's argument and for a value INCR adds to.
//!
//! Redis takes only the canonical decimal form of a signed 64-bit integer: an optional `-`,
//! then digits with no leading zero, or the single digit `0`. So `+5`, `007`, `-0`, ` 5`, `5 `,
//! the empty string, `1e3`, `0x10` and anything outside `i64` are refused, where Rust's
//! `str::parse` would take several of them. A value that round-trips through this parser prints
//! back byte for byte, which is why Redis insists on it.

/// The longest canonical `i64` text: `-9223372036854775808`.
const MAX_LEN: usize = 20;

/// `b` as an `i64` if it is the canonical decimal text of one, as Redis parses integers.
pub fn parse_i64(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > MAX_LEN {
        return None;
    }
    if b == b"0" {
        return Some(0);
    }
    let (negative, digits) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    // No leading zero: this also refuses "-0", "00" and a lone "-".
    if !matches!(digits.first(), Some(b'1'..=b'9')) {
        return None;
    }
    let mut magnitude: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        magnitude = magnitude
            .checked_mul(10)?
            .checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        // i64::MIN's magnitude is one more than i64::MAX's.
        if magnitude > i64::MAX.unsigned_abs() + 1 {
            return None;
        }
        Some(0i64.wrapping_sub_unsigned(magnitude))
    } else {
        i64::try_from(magnitude).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::parse_i64;

    /// Each input with the answer redis-server 7.0.15 gave to `INCRBY k <input>` on an absent
    /// key: the number, or None for "ERR value is not an integer or out of range".
    const REDIS_ANSWERS: &[(&[u8], Option<i64>)] = &[
        (b"0", Some(0)),
        (b"-1", Some(-1)),
        (b"5", Some(5)),
        (b"9223372036854775807", Some(i64::MAX)),
        (b"-9223372036854775808", Some(i64::MIN)),
        (b"-0", None),
        (b"+5", None),
        (b"007", None),
        (b"00", None),
        (b"-00", None),
        (b"-01", None),
        (b" 5", None),
        (b"5 ", None),
        (b"\t5", None),
        (b"5\n", None),
        (b"", None),
        (b"-", None),
        (b"+", None),
        (b"--5", None),
        (b"-+5", None),
        (b"-1-", None),
        (b"1_000", None),
        (b"1e3", None),
        (b"0x10", None),
        (b"1.0", None),
        (b"9223372036854775808", None),
        (b"-9223372036854775809", None),
        (b"18446744073709551616", None),
        (b"99999999999999999999", None),
        (b"123456789012345678901", None),
        ("\u{0661}".as_bytes(), None),
        ("\u{ff11}".as_bytes(), None),
    ];

    #[test]
    fn accepts_and_refuses_what_redis_does() {
        for &(input, expected) in REDIS_ANSWERS {
            assert_eq!(
                parse_i64(input),
                expected,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn every_accepted_number_prints_back_as_its_input() {
        let samples = [
            i64::MIN,
            i64::MIN + 1,
            -1_000_000,
            -10,
            -9,
            -1,
            0,
            1,
            9,
            10,
            1_000_000,
            i64::MAX - 1,
            i64::MAX,
        ];
        for n in samples {
            assert_eq!(parse_i64(n.to_string().as_bytes()), Some(n));
        }
    }

    #[test]
    fn a_nul_byte_or_non_ascii_is_refused() {
        assert_eq!(parse_i64(b"5\0"), None);
        assert_eq!(parse_i64(b"\xff"), None);
        assert_eq!(parse_i64(&[b'1'; 21]), None);
    }
}
