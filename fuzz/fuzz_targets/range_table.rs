//! Fuzzes the key-range decoders (`kv::ranges`); the properties checked are documented on `kv::fuzzing::range_table`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kv::fuzzing::range_table(data));
