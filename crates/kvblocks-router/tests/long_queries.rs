//! Long requests against a crowded table: queries of up to 420 blocks (past
//! the query's 16-block prefetch window many times over) over an index dense
//! enough that many blocks sit away from their home entry, with holes in the
//! workers' chains. The overlap scores must be what the workers' sets give.

use std::collections::HashSet;

use kvblocks::LogicalLayoutHandle::G1;
use kvblocks_router::{IndexBatch, Router, WorkerId};
use proptest::prelude::*;

fn stored(worker: u64, blocks: Vec<u64>) -> IndexBatch {
    IndexBatch::stored(WorkerId(u128::from(worker)), G1, blocks)
}

fn removed(worker: u64, blocks: Vec<u64>) -> IndexBatch {
    IndexBatch::removed(WorkerId(u128::from(worker)), G1, blocks)
}

/// One worker's hold on one chain: a leading part, then holes.
#[derive(Debug, Clone)]
struct Hold {
    worker: u64,
    chain: usize,
    len: usize,
    holes: Vec<usize>,
}

fn hold(workers: u64, chains: usize) -> impl Strategy<Value = Hold> {
    (
        0..workers,
        0..chains,
        0..400usize,
        proptest::collection::vec(0..400usize, 0..4),
    )
        .prop_map(|(worker, chain, len, holes)| Hold {
            worker,
            chain,
            len,
            holes,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn long_queries_over_a_crowded_table_match_the_workers_sets(
        workers in 1..=64u64,
        seed in any::<u64>(),
        holds in proptest::collection::vec(hold(64, 4), 1..24),
        filler in 0..30_000u64,
        query_lens in proptest::collection::vec(1..420usize, 1..6),
    ) {
        let router = Router::new();
        let key = |chain: usize, i: usize| {
            seed ^ ((chain as u64 + 1) << 40) ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        };
        let chains: Vec<Vec<u64>> = (0..4).map(|c| (0..420).map(|i| key(c, i)).collect()).collect();
        let mut sets: Vec<HashSet<u64>> = vec![HashSet::new(); 64];
        // Unrelated blocks crowd the table, so probe runs grow long.
        let crowd: Vec<u64> = (0..filler).map(|i| seed.wrapping_add(i).wrapping_mul(0xbf58_476d_1ce4_e5b9) | 1 << 63).collect();
        router.apply(&stored(workers - 1, crowd.clone())).expect("unsequenced");
        sets[(workers - 1) as usize].extend(crowd);
        for h in &holds {
            let worker = h.worker % workers;
            let blocks = chains[h.chain][..h.len].to_vec();
            router.apply(&stored(worker, blocks.clone())).expect("unsequenced");
            sets[worker as usize].extend(blocks);
            let holes: Vec<u64> = h.holes.iter().filter(|&&i| i < h.len).map(|&i| chains[h.chain][i]).collect();
            router.apply(&removed(worker, holes.clone())).expect("unsequenced");
            for k in holes {
                sets[worker as usize].remove(&k);
            }
        }
        for chain in &chains {
            for &len in &query_lens {
                let request = &chain[..len];
                let scores = router.overlap_scores_keys(request);
                let mut got: Vec<(u128, u32)> = scores.scores.iter().map(|s| (s.worker.0, s.blocks)).collect();
                let mut want: Vec<(u128, u32)> = (0..workers)
                    .map(|w| (u128::from(w), request.iter().take_while(|k| sets[w as usize].contains(k)).count() as u32))
                    .filter(|&(_, n)| n > 0)
                    .collect();
                got.sort();
                want.sort();
                prop_assert_eq!(got, want);
            }
        }
    }
}
