//! Any bytes through the kvbm decoder: a frame or a typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kvblocks_wire::kvbm::decode(data);
});
