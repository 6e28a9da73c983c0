//! The cost model that turns a tiered replay's hits into prefill time saved.
//!
//! A hit saves recomputing its tokens; a hit found in a lower tier first has
//! to be copied up into G1 (onboarded), which costs its bytes over that
//! tier's bandwidth. So a block hit in tier `k` saves
//! `tokens x recompute_per_token - block_bytes / bandwidth_k`, which is
//! negative for a tier slower than recomputing (remote storage at 1 GB/s for
//! an 8B model on one GPU): the report says so rather than hiding it.
//!
//! This module owns the arithmetic and its defaults; it never replays.
//!
//! # Defaults: a Llama-3-8B-like model on one H100
//!
//! - Recompute: `2 x params` FLOPs per token (the weights' matrix products;
//!   attention's context-length term is left out, which makes long prompts'
//!   recompute look cheaper than it is), 8.03e9 parameters, 989 dense BF16
//!   TFLOPS at 50% utilisation: 32.5 us per token, 16.6 ms per 512-token block.
//! - Block bytes: K and V x 32 layers x 8 KV heads x head dim 128 x 2 bytes
//!   (BF16) x 512 tokens = 64 MiB.
//! - Bandwidth (GB = 10^9 bytes): G2 pinned host over PCIe 5 x16 25 GB/s,
//!   G3 local NVMe 5 GB/s, G4 remote storage 1 GB/s.
//!
//! Offloads (copies down) are taken as overlapped with compute and cost no
//! prefill time; their bytes are reported.

use kvblocks::LogicalLayoutHandle;
use serde::Serialize;

/// The KV cache's shape, which fixes the bytes of a block.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ModelShape {
    /// Transformer layers.
    pub layers: u64,
    /// Key/value heads per layer (grouped-query attention).
    pub kv_heads: u64,
    /// Dimension of one head.
    pub head_dim: u64,
    /// Bytes per cached element (2 for BF16/FP16, 1 for FP8).
    pub dtype_bytes: u64,
    /// Parameters, for the recompute FLOPs (`2 x params` per token).
    pub params: f64,
}

impl Default for ModelShape {
    fn default() -> Self {
        Self {
            layers: 32,
            kv_heads: 8,
            head_dim: 128,
            dtype_bytes: 2,
            params: 8.03e9,
        }
    }
}

impl ModelShape {
    /// KV bytes of one token: K and V, every layer and head.
    pub fn bytes_per_token(&self) -> u64 {
        2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes
    }
}

/// Default GPU throughput, dense BF16 TFLOPS (H100 SXM).
pub const DEFAULT_GPU_TFLOPS: f64 = 989.0;
/// Default share of that throughput prefill reaches.
pub const DEFAULT_MFU: f64 = 0.5;
/// Default bandwidths of G2, G3, G4 in GB/s.
pub const DEFAULT_BANDWIDTH_GB_PER_S: [f64; 3] = [25.0, 5.0, 1.0];

/// Everything the prefill-saved figures depend on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostModel {
    /// The model's shape.
    pub model: ModelShape,
    /// GPU throughput assumed, TFLOPS (unused when the recompute cost is given).
    pub gpu_tflops: f64,
    /// Utilisation assumed (unused when the recompute cost is given).
    pub mfu: f64,
    /// Recompute time of one prompt token, microseconds.
    pub recompute_us_per_token: f64,
    /// Whether `recompute_us_per_token` was given rather than derived.
    pub recompute_given: bool,
    /// Tokens per block (the trace's block size).
    pub block_tokens: u64,
    /// Bytes of one block's KV.
    pub block_bytes: u64,
    /// Copy bandwidth into G1 from G2, G3, G4, GB/s (a map by tier name in
    /// the JSON).
    #[serde(serialize_with = "by_tier_name")]
    pub bandwidth_gb_per_s: [f64; 3],
}

/// Writes the lower tiers' bandwidths as `{"G2": .., "G3": .., "G4": ..}`.
fn by_tier_name<S: serde::Serializer>(values: &[f64; 3], serializer: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = serializer.serialize_map(Some(values.len()))?;
    for (tier, value) in LogicalLayoutHandle::ALL[1..].iter().zip(values) {
        map.serialize_entry(tier.name(), value)?;
    }
    map.end()
}

/// A cost-model flag out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("--{flag}: {value} is not a positive number")]
pub struct CostModelError {
    /// The flag, without dashes.
    pub flag: &'static str,
    /// The value given.
    pub value: String,
}

impl CostModel {
    /// The model from its parts; the recompute cost is derived from
    /// `params`, `gpu_tflops` and `mfu` unless `recompute_us_per_token` is
    /// given.
    ///
    /// # Errors
    ///
    /// A [`CostModelError`] naming the first value that is zero, negative
    /// or not finite (or an MFU above 1).
    pub fn new(
        model: ModelShape,
        gpu_tflops: f64,
        mfu: f64,
        recompute_us_per_token: Option<f64>,
        block_tokens: u64,
        bandwidths: &[(LogicalLayoutHandle, f64)],
    ) -> Result<Self, CostModelError> {
        let positive = |flag: &'static str, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(value)
            } else {
                Err(CostModelError {
                    flag,
                    value: value.to_string(),
                })
            }
        };
        let whole = |flag: &'static str, value: u64| {
            if value > 0 && value <= 1 << 20 {
                Ok(value)
            } else {
                Err(CostModelError {
                    flag,
                    value: value.to_string(),
                })
            }
        };
        whole("layers", model.layers)?;
        whole("kv-heads", model.kv_heads)?;
        whole("head-dim", model.head_dim)?;
        whole("dtype-bytes", model.dtype_bytes)?;
        positive("model-params", model.params)?;
        positive("gpu-tflops", gpu_tflops)?;
        positive("mfu", mfu)?;
        if mfu > 1.0 {
            return Err(CostModelError {
                flag: "mfu",
                value: format!("{mfu} (above 1)"),
            });
        }
        let (recompute, given) = match recompute_us_per_token {
            Some(us) => (positive("recompute-us-per-token", us)?, true),
            None => (2.0 * model.params / (gpu_tflops * 1e12 * mfu) * 1e6, false),
        };
        let mut bandwidth = DEFAULT_BANDWIDTH_GB_PER_S;
        for &(tier, gb_per_s) in bandwidths {
            if let Some(index) = tier.index().checked_sub(1) {
                bandwidth[index] = gb_per_s;
            }
        }
        Ok(Self {
            model,
            gpu_tflops,
            mfu,
            recompute_us_per_token: recompute,
            recompute_given: given,
            block_tokens,
            block_bytes: model.bytes_per_token() * block_tokens,
            bandwidth_gb_per_s: bandwidth,
        })
    }

    /// The defaults (module docs) for `block_tokens`-token blocks.
    pub fn default_for(block_tokens: u64) -> Self {
        Self::new(
            ModelShape::default(),
            DEFAULT_GPU_TFLOPS,
            DEFAULT_MFU,
            None,
            block_tokens,
            &[],
        )
        .expect("the defaults are valid")
    }

    /// Seconds to recompute `tokens` prompt tokens.
    pub fn recompute_seconds(&self, tokens: u64) -> f64 {
        tokens as f64 * self.recompute_us_per_token * 1e-6
    }

    /// Seconds to copy `blocks` blocks from `tier` into G1 (zero for G1).
    pub fn onboard_seconds(&self, tier: LogicalLayoutHandle, blocks: u64) -> f64 {
        match tier.index().checked_sub(1) {
            None => 0.0,
            Some(index) => {
                blocks as f64 * self.block_bytes as f64 / (self.bandwidth_gb_per_s[index] * 1e9)
            }
        }
    }

    /// One line for the table's header.
    pub fn describe(&self) -> String {
        let source = if self.recompute_given {
            "given".to_string()
        } else {
            format!(
                "2 x {:.3e} params / ({} TFLOPS x {} MFU)",
                self.model.params, self.gpu_tflops, self.mfu
            )
        };
        format!(
            "cost model: recompute {:.1} us/token ({source}); block {:.1} MiB ({} layers x {} kv heads x {} dim x {} B x 2 (K,V) x {} tokens); onboard G2 {} GB/s, G3 {} GB/s, G4 {} GB/s",
            self.recompute_us_per_token,
            self.block_bytes as f64 / (1u64 << 20) as f64,
            self.model.layers,
            self.model.kv_heads,
            self.model.head_dim,
            self.model.dtype_bytes,
            self.block_tokens,
            self.bandwidth_gb_per_s[0],
            self.bandwidth_gb_per_s[1],
            self.bandwidth_gb_per_s[2],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_describe_a_llama_3_8b_block_on_one_h100() {
        let cost = CostModel::default_for(512);
        assert_eq!(cost.block_bytes, 64 << 20);
        assert!((cost.recompute_us_per_token - 32.47).abs() < 0.01);
        // A 512-token block: 16.6 ms to recompute, 2.7 ms from host, 67 ms from remote.
        assert!((cost.recompute_seconds(512) - 0.01663).abs() < 1e-4);
        let host = cost.onboard_seconds(LogicalLayoutHandle::G2, 1);
        assert!((host - 0.002684).abs() < 1e-5, "{host}");
        assert!(cost.onboard_seconds(LogicalLayoutHandle::G4, 1) > cost.recompute_seconds(512));
        assert_eq!(cost.onboard_seconds(LogicalLayoutHandle::G1, 100), 0.0);
    }

    #[test]
    fn overrides_apply_and_bad_values_are_named() {
        let cost = CostModel::new(
            ModelShape::default(),
            1.0,
            1.0,
            Some(10.0),
            16,
            &[(LogicalLayoutHandle::G3, 2.0)],
        )
        .unwrap();
        assert_eq!(cost.recompute_us_per_token, 10.0);
        assert_eq!(cost.bandwidth_gb_per_s, [25.0, 2.0, 1.0]);
        let bad = |mfu, us| {
            CostModel::new(ModelShape::default(), 989.0, mfu, us, 512, &[])
                .unwrap_err()
                .flag
        };
        assert_eq!(bad(0.0, None), "mfu");
        assert_eq!(bad(1.5, None), "mfu");
        assert_eq!(bad(0.5, Some(-1.0)), "recompute-us-per-token");
        assert_eq!(bad(0.5, Some(f64::NAN)), "recompute-us-per-token");
        let shape = ModelShape {
            layers: 0,
            ..ModelShape::default()
        };
        let err = CostModel::new(shape, 989.0, 0.5, None, 512, &[]).unwrap_err();
        assert_eq!(err.flag, "layers");
    }
}
