//! No decoder allocates more than a fixed multiple of its input's size,
//! whatever lengths the input claims (its own test binary: the counting
//! allocator sees every thread, so nothing else may run beside it).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use kvblocks_wire::{dynamo, kvbm, snapshot, vllm};

struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates every call to the system allocator unchanged; it only
// counts the bytes asked for.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes allocated (not freed: the total) while `decode` runs.
fn allocated_by(decode: impl FnOnce()) -> usize {
    let before = ALLOCATED.load(Ordering::Relaxed);
    decode();
    ALLOCATED.load(Ordering::Relaxed) - before
}

#[test]
fn decoders_allocate_in_proportion_to_their_input() {
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    // Claimed lengths of 2^32 - 1 behind a few real bytes, at every level.
    for claim in [
        [0xdd, 0xff, 0xff, 0xff, 0xff],
        [0xdf, 0xff, 0xff, 0xff, 0xff],
    ] {
        let mut kvbm = vec![0x92, 0x81, 0xa6];
        kvbm.extend_from_slice(b"Create");
        kvbm.extend_from_slice(&claim);
        inputs.push(kvbm);
        let mut vllm = vec![0x92, 0x00];
        vllm.extend_from_slice(&claim);
        inputs.push(vllm);
        inputs.push(claim.to_vec());
    }
    // Long runs of one-byte elements: the most elements per input byte.
    for len in [1_000usize, 100_000] {
        let mut removes = vec![0x92, 0x00, 0x91, 0x92, 0xac];
        removes.extend_from_slice(b"BlockRemoved");
        removes.push(0xdd);
        removes.extend_from_slice(&(len as u32).to_be_bytes());
        removes.extend(std::iter::repeat(0x01).take(len));
        inputs.push(removes);
        let mut events = vec![0x92, 0x00, 0xdd];
        events.extend_from_slice(&(len as u32).to_be_bytes());
        events.extend(std::iter::repeat(0x90).take(len));
        inputs.push(events);
        let mut json =
            b"{\"worker_id\":1,\"event\":{\"event_id\":1,\"data\":{\"removed\":{\"block_hashes\":["
                .to_vec();
        json.extend(std::iter::repeat(b"1,".as_slice()).take(len).flatten());
        json.extend_from_slice(b"1]}}}}");
        inputs.push(json);
    }
    for input in &inputs {
        let spent = allocated_by(|| {
            let _ = kvbm::decode(input);
            let _ = vllm::decode(input);
            let _ = dynamo::decode(input);
            let _ = snapshot::decode(input);
        });
        // The largest element type decoded (a vLLM event) is under 256 bytes.
        let bound = 256 * input.len() + 64 * 1024;
        assert!(
            spent <= bound,
            "{} input bytes made the decoders allocate {spent}",
            input.len()
        );
    }
}
