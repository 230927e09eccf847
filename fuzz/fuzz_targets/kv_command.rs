//! Fuzzes the command decoder (`kv::Command`, `kv::CommandResult`); the properties checked are documented on `kv::fuzzing::command`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kv::fuzzing::command(data));
