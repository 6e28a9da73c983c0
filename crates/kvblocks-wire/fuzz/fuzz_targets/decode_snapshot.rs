//! Any bytes through the snapshot decoder: a snapshot or a typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kvblocks_wire::snapshot::decode(data);
});
