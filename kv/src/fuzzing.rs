//! Fuzz entry points for this crate's decoders, shared by the cargo-fuzz targets in `fuzz/` and
//! the corpus test that `cargo test` runs (`net/tests/fuzz_corpus.rs`).
//!
//! Each function takes any bytes and panics only if a property of the decoder is violated: it
//! is not enough that decoding returns; what it returns must be consistent.

use bytes::Bytes;

use crate::codec;
use crate::command::{
    Command, CommandResult, COMMAND_VERSION, MAX_COMMAND_LEN, MAX_KEY_LEN, MAX_VALUE_LEN,
};
use crate::error::DecodeError;

/// The command decoder ([`Command::decode`], and [`CommandResult::decode`], which shares its
/// frame) on `data` as given, then on `data` resealed: the same version byte and body with the
/// length prefix and checksum made correct, so that mutated bodies get past the CRC and reach
/// the body parser. A valid encoding reseals to itself.
///
/// Properties checked for each:
/// * decoding never panics;
/// * a decoded command or result re-encodes to exactly the input bytes (the encoding is
///   canonical), hence decodes back to an equal value;
/// * every decoded key and value respects its length bound, and an input longer than the largest
///   command is refused without looking inside;
/// * a frame whose checksum does not match is refused as damaged (before version or body).
pub fn command(data: &[u8]) {
    let raw = Bytes::copy_from_slice(data);
    check_command(&raw);
    if data.len() >= 9 {
        let sealed = Bytes::from(seal_frame(data[0], &data[5..data.len() - 4]));
        if sealed != raw {
            // The checksum or length of the raw input was wrong, so it cannot have decoded.
            assert!(
                Command::decode(&raw).is_err() && CommandResult::decode(&raw).is_err(),
                "a frame with a wrong length or checksum decoded"
            );
        }
        check_command(&sealed);
    }
}

/// A command frame around any `body`, with the given version byte and a correct length and
/// checksum: for building seed inputs that reach the body parser.
pub fn seal_frame(version: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 9);
    out.push(version);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    codec::seal(&mut out);
    out
}

/// Runs both decoders on one input and checks their properties.
fn check_command(input: &Bytes) {
    match &Command::decode(input) {
        Ok(c) => {
            assert_eq!(
                &c.encode(),
                input,
                "decoded command {c:?} re-encodes differently"
            );
            assert_eq!(Command::decode(&c.encode()).as_ref(), Ok(c));
            assert!(input.len() <= MAX_COMMAND_LEN + 9);
            let (mut keys, mut values) = (Vec::new(), Vec::new());
            c.op.visit_strings(&mut keys, &mut values);
            assert!(keys.iter().all(|k| k.len() <= MAX_KEY_LEN));
            assert!(values.iter().all(|v| v.len() <= MAX_VALUE_LEN));
        }
        Err(e) => check_error(input, e),
    }
    match CommandResult::decode(input) {
        Ok(r) => {
            assert_eq!(
                &r.encode(),
                input,
                "decoded result {r:?} re-encodes differently"
            );
            assert_eq!(CommandResult::decode(&r.encode()), Ok(r));
        }
        Err(e) => check_error(input, &e),
    }
}

/// An error must be one the input can explain.
fn check_error(input: &Bytes, e: &DecodeError) {
    match e {
        DecodeError::BadChecksum { stored, computed } => {
            assert_ne!(stored, computed);
            assert!(codec::unseal(input).is_err());
        }
        DecodeError::UnknownVersion(v) => {
            assert_ne!(*v, COMMAND_VERSION);
            assert_eq!(input.first(), Some(v));
            // The version is looked at only once the checksum matched.
            assert!(codec::unseal(input).is_ok());
        }
        DecodeError::TooLong { len, max, .. } => assert!(len > max),
        DecodeError::Truncated { needed, have } => assert!(needed > have),
        DecodeError::TrailingBytes(n) => assert!(*n > 0),
        DecodeError::UnknownTag { .. } | DecodeError::Invalid(_) => {}
    }
}

/// The range decoders ([`RangeTable::decode`], [`RangeDescriptor::decode`], [`Split::decode`]) on
/// `data` as given, then resealed (its last four bytes replaced by a correct checksum of the
/// rest), so that mutated bodies reach the parsers.
///
/// Properties checked for each:
/// * decoding never panics;
/// * what decodes re-encodes to exactly the input (the encodings are canonical);
/// * a decoded table has no two ranges sharing a key, and no decoded range ends at or before
///   its start.
///
/// [`RangeTable::decode`]: crate::ranges::RangeTable::decode
/// [`RangeDescriptor::decode`]: crate::ranges::RangeDescriptor::decode
/// [`Split::decode`]: crate::ranges::Split::decode
pub fn range_table(data: &[u8]) {
    check_ranges(data);
    if data.len() >= 4 {
        let mut sealed = data[..data.len() - 4].to_vec();
        codec::seal(&mut sealed);
        check_ranges(&sealed);
    }
}

fn check_ranges(input: &[u8]) {
    use crate::ranges::{RangeDescriptor, RangeTable, Split};
    let ends_after_start = |d: &RangeDescriptor| {
        d.end
            .as_ref()
            .is_none_or(|end| end.as_ref() > d.start.as_ref())
    };
    if let Ok(table) = RangeTable::decode(input) {
        assert_eq!(
            table.encode(),
            input,
            "a range table re-encodes differently"
        );
        assert_eq!(table.check_disjoint(), Ok(()));
        assert!(table.ranges().all(ends_after_start));
    }
    if let Ok(d) = RangeDescriptor::decode(input) {
        assert_eq!(
            d.encode(),
            input,
            "a range descriptor re-encodes differently"
        );
        assert!(ends_after_start(&d));
    }
    if let Ok(split) = Split::decode(input) {
        assert_eq!(split.encode(), input, "a split re-encodes differently");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_commands_and_garbage_pass() {
        let c = Command::new(
            1,
            2,
            crate::command::Op::Cas {
                key: Bytes::from_static(b"k"),
                expected: None,
                new: Some(Bytes::from_static(b"v")),
            },
        );
        command(&c.encode());
        command(&CommandResult::Value(-3).encode());
        command(&CommandResult::NotOwned { range: 2, epoch: 3 }.encode());
        command(b"");
        command(&[1; 9]);
        command(&[0xff; 40]);
    }
}
