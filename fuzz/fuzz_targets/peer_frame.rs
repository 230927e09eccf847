//! Fuzzes peer frames and the Raft message codec inside them; the properties checked are documented on `net::fuzzing::peer_frame`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| net::fuzzing::peer_frame(data));
