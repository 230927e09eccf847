//! Fuzzes the Redis-protocol request parser; the properties checked are documented on `net::fuzzing::resp_request`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| net::fuzzing::resp_request(data));
