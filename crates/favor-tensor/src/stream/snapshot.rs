//! A stream's bytes: the `FAVT` format (header, one favor-core snapshot per head, CRC-32).

use favor_core::Kernels;

use super::{HeadState, HeadStates, HybridHeadState};
use crate::backend::{BackendOp, Real};
use crate::config::Config;
use crate::error::{Error, Result};
use favor_core::HybridShape;

const MAGIC: [u8; 4] = *b"FAVT";
/// Version of the byte format [`Stream::snapshot`](crate::Stream::snapshot) writes.
pub const STREAM_SNAPSHOT_VERSION: u32 = 2;
const HEADER: usize = 48;
/// Each version-2 head record starts with its batch and head index (u32 each).
const RECORD: usize = 8;
const TRAILER: usize = 4;

impl<T: Real> HeadStates<'_, T> {
    pub(super) fn snapshot(&self, cfg: &Config, batch: usize, position: u64) -> Result<Vec<u8>> {
        struct Snap<'s, 'p, T> {
            states: &'s HeadStates<'p, T>,
            value_dim: usize,
            hybrid: Option<HybridShape>,
        }
        impl<T: Real> BackendOp<T> for Snap<'_, '_, T> {
            type Output = Result<Vec<Vec<u8>>>;
            fn with_kernels<K: Kernels<T>>(self, kernels: &K) -> Result<Vec<Vec<u8>>> {
                let maps = self.states.maps();
                if let Some(shape) = self.hybrid {
                    return (self.states.hybrid.iter().enumerate())
                        .map(|(i, h)| {
                            let mut memory = h.clone();
                            let map = maps.of(i);
                            let s = (memory.attach(*kernels, map, self.value_dim, shape)).map_err(
                                |e| Error::Snapshot(format!("state does not re-attach: {e}")),
                            )?;
                            let mut bytes = vec![0u8; s.snapshot_len()];
                            let n = (s.snapshot(&mut bytes))
                                .map_err(|e| Error::Snapshot(e.to_string()))?;
                            bytes.truncate(n);
                            Ok(bytes)
                        })
                        .collect();
                }
                self.states
                    .heads
                    .iter()
                    .enumerate()
                    .map(|(i, h)| {
                        let mut memory = h.clone();
                        let s = memory.attach(*kernels, maps.of(i), self.value_dim);
                        let s = s.map_err(|e| {
                            Error::Snapshot(format!("state does not re-attach: {e}"))
                        })?;
                        let mut bytes = vec![0u8; s.snapshot_len()];
                        let n = s
                            .snapshot(&mut bytes)
                            .map_err(|e| Error::Snapshot(e.to_string()))?;
                        bytes.truncate(n);
                        Ok(bytes)
                    })
                    .collect()
            }
        }
        let per_head = match self.peer {
            Some(peer) => self.peer_records(&peer, cfg.value_dim)?,
            None => cfg.with_backend(Snap {
                states: self,
                value_dim: cfg.value_dim,
                hybrid: cfg.hybrid,
            })?,
        };
        let each = per_head.first().map_or(0, Vec::len);
        let mut out = Vec::with_capacity(HEADER + (RECORD + each) * per_head.len() + TRAILER);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&STREAM_SNAPSHOT_VERSION.to_le_bytes());
        out.extend_from_slice(&(size_of::<T>() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(batch as u64).to_le_bytes());
        out.extend_from_slice(&(cfg.heads as u64).to_le_bytes());
        out.extend_from_slice(&(each as u64).to_le_bytes());
        out.extend_from_slice(&position.to_le_bytes());
        for (i, h) in per_head.iter().enumerate() {
            // Indices as u32: a stream of more than 2³² heads could not be allocated.
            out.extend_from_slice(&((i / cfg.heads) as u32).to_le_bytes());
            out.extend_from_slice(&((i % cfg.heads) as u32).to_le_bytes());
            out.extend_from_slice(h);
        }
        let crc = favor_core::crc32(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Restores every head; returns the tokens fed.
    pub(super) fn restore(&mut self, cfg: &Config, batch: usize, bytes: &[u8]) -> Result<u64> {
        let bad = |s: &str| Err(Error::Snapshot(s.to_string()));
        let Some(header) = bytes.get(..HEADER) else {
            return bad("shorter than its header");
        };
        let u32_at =
            |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[i..i + 8]);
            u64::from_le_bytes(b)
        };
        if header[..4] != MAGIC {
            return bad("not a favor-tensor stream snapshot");
        }
        let version = u32_at(4);
        if version != 1 && version != STREAM_SNAPSHOT_VERSION {
            return Err(Error::Snapshot(format!(
                "unsupported format version {version} (this build reads 1 and {STREAM_SNAPSHOT_VERSION})"
            )));
        }
        let (record, trailer) = if version == 1 {
            (0, 0)
        } else {
            (RECORD, TRAILER)
        };
        let each = usize::try_from(u64_at(32)).unwrap_or(usize::MAX);
        let n = usize::try_from(u64_at(16))
            .ok()
            .zip(usize::try_from(u64_at(24)).ok())
            .and_then(|(b, h)| b.checked_mul(h));
        let implied = each
            .checked_add(record)
            .zip(n)
            .and_then(|(r, n)| r.checked_mul(n))
            .and_then(|x| x.checked_add(HEADER + trailer));
        if implied != Some(bytes.len()) || each == 0 {
            return bad("length disagrees with its header (truncated or padded)");
        }
        if version != 1 {
            let body = bytes.len() - TRAILER;
            let stored = u32::from_le_bytes(bytes[body..].try_into().unwrap_or([0; 4]));
            if favor_core::crc32(&bytes[..body]) != stored {
                return bad("checksum mismatch: the bytes are corrupted");
            }
        }
        if u32_at(8) != size_of::<T>() as u32 {
            return bad("written with another precision");
        }
        if u32_at(12) != 0 {
            return bad("reserved header field is not zero");
        }
        if u64_at(16) != batch as u64 || u64_at(24) != cfg.heads as u64 {
            return Err(Error::Snapshot(format!(
                "written for batch {} × {} heads, this stream has {batch} × {}",
                u64_at(16),
                u64_at(24),
                cfg.heads
            )));
        }
        let end = bytes.len() - trailer;
        let records: Vec<&[u8]> = bytes[HEADER..end].chunks_exact(record + each).collect();
        for (i, r) in records.iter().enumerate() {
            if version == 1 {
                break;
            }
            let (b, h) = (
                u32::from_le_bytes([r[0], r[1], r[2], r[3]]) as usize,
                u32::from_le_bytes([r[4], r[5], r[6], r[7]]) as usize,
            );
            if (b, h) != (i / cfg.heads, i % cfg.heads) {
                return Err(Error::Snapshot(format!(
                    "record {i} holds batch {b}, head {h}, not batch {}, head {}: heads reordered",
                    i / cfg.heads,
                    i % cfg.heads
                )));
            }
        }
        let body: Vec<&[u8]> = records.iter().map(|r| &r[record..]).collect();
        let position = u64_at(40);
        if let Some(peer) = self.peer {
            let loaded = self.load_peers(&peer, cfg, &body)?;
            // A peer stream counts every token (the range check refuses a key it would drop).
            if position == u64::MAX || loaded.iter().any(|h| h.tokens() != position) {
                return bad("token count disagrees with the heads' states");
            }
            self.peers = loaded;
            return Ok(position);
        }
        if let Some(shape) = cfg.hybrid {
            let records = Load {
                states: self,
                value_dim: cfg.value_dim,
                body,
                heads: cfg.heads,
            };
            let loaded = cfg.with_backend(LoadHybrid { records, shape })?;
            if position == u64::MAX || loaded.iter().any(|h| h.tokens() != position) {
                return bad("token count disagrees with the heads' states");
            }
            self.hybrid = loaded;
            return Ok(position);
        }
        let loaded = cfg.with_backend(Load {
            states: self,
            value_dim: cfg.value_dim,
            body,
            heads: cfg.heads,
        })?;
        // Absent keys make a head's own count lower than the tokens fed, never higher.
        if position == u64::MAX || loaded.iter().any(|h| h.tokens() > position) {
            return bad("token count disagrees with the heads' states");
        }
        self.heads = loaded;
        Ok(position)
    }
}

impl<T: Real> HeadStates<'_, T> {
    /// Every compat head's `FAVP` record (favor-core's `PeerMemory` snapshot).
    fn peer_records(
        &self,
        peer: &favor_core::PeerAttention<'_, T>,
        dv: usize,
    ) -> Result<Vec<Vec<u8>>> {
        let fail = |e: favor_core::Error| Error::Snapshot(e.to_string());
        (self.peers.iter())
            .map(|h| {
                let mut bytes = vec![0u8; h.snapshot_len(peer, dv).map_err(fail)?];
                h.snapshot(peer, dv, &mut bytes).map_err(fail)?;
                Ok(bytes)
            })
            .collect()
    }

    /// Restores every compat head from its `FAVP` record into fresh memories. Outputs may
    /// be f32 while the state is f64: with the peers' positive features each output is a
    /// convex combination of the ratios `S_e,ij / z_e,i` and the values' mean `vsum_j / n`,
    /// so a state whose ratios exceed f32 cannot come from values this layer accepts.
    fn load_peers(
        &self,
        peer: &favor_core::PeerAttention<'_, T>,
        cfg: &Config,
        body: &[&[u8]],
    ) -> Result<Vec<super::PeerHeadState<T>>> {
        let (m, dv) = (peer.feature_dim(), cfg.value_dim);
        let limit = f64::from(f32::MAX);
        let sub = f64::from(f32::MIN_POSITIVE) * f64::from(f32::EPSILON);
        (body.iter().enumerate())
            .map(|(i, chunk)| {
                let (b, h) = (i / cfg.heads, i % cfg.heads);
                let len = self.peers[i].buffer().len();
                let mut memory = super::PeerHeadState::new(vec![T::zero(); len]);
                memory
                    .restore(peer, dv, chunk)
                    .map_err(|e| Error::Snapshot(format!("batch {b}, head {h}: {e}")))?;
                let at = |j: usize| favor_core::Float::to_f64(memory.buffer()[j]);
                let n = memory.tokens() as f64;
                let too_big = (0..m).any(|r| {
                    let z = at(m * dv + r);
                    (0..dv).any(|j| at(r * dv + j).abs() > (z + sub) * limit)
                }) || (0..dv).any(|j| at(m * dv + m + j).abs() > n * limit);
                if too_big {
                    return Err(Error::Snapshot(format!(
                        "batch {b}, head {h}: state values beyond the f32 output range"
                    )));
                }
                Ok(memory)
            })
            .collect()
    }
}

/// Restores every head from its favor-core snapshot (`body`, one per head) into fresh
/// memories.
struct Load<'s, 'p, 'b, T> {
    states: &'s HeadStates<'p, T>,
    value_dim: usize,
    body: Vec<&'b [u8]>,
    heads: usize,
}

/// [`Load`] for hybrid heads (`FAVH` snapshots).
struct LoadHybrid<'s, 'p, 'b, T> {
    records: Load<'s, 'p, 'b, T>,
    shape: HybridShape,
}

impl<T: Real> BackendOp<T> for LoadHybrid<'_, '_, '_, T> {
    type Output = Result<Vec<HybridHeadState<T>>>;
    fn with_kernels<K: Kernels<T>>(self, kernels: &K) -> Result<Vec<HybridHeadState<T>>> {
        let r = self.records;
        let maps = r.states.maps();
        (r.body.iter().enumerate())
            .map(|(i, chunk)| {
                let map = maps.of(i);
                let len = r.states.hybrid[i].buffer().len();
                let mut memory = HybridHeadState::new(vec![T::zero(); len]);
                let mut s = (memory.attach(*kernels, map, r.value_dim, self.shape))
                    .map_err(crate::error::setup)?;
                s.restore(chunk).map_err(|e| {
                    let (b, h) = (i / r.heads, i % r.heads);
                    Error::Snapshot(format!("batch {b}, head {h}: {e}"))
                })?;
                drop(s); // writes the head's counts and far scale back
                Ok(memory)
            })
            .collect()
    }
}

impl<T: Real> BackendOp<T> for Load<'_, '_, '_, T> {
    type Output = Result<Vec<HeadState<T>>>;
    fn with_kernels<K: Kernels<T>>(self, kernels: &K) -> Result<Vec<HeadState<T>>> {
        let maps = self.states.maps();
        self.body
            .iter()
            .enumerate()
            .map(|(i, chunk)| {
                let map = maps.of(i);
                let len = self.states.heads[i].buffer().len();
                let mut memory = HeadState::new(vec![T::zero(); len]);
                let mut s = memory
                    .attach(*kernels, map, self.value_dim)
                    .map_err(crate::error::setup)?;
                s.restore(chunk).map_err(|e| {
                    Error::Snapshot(format!(
                        "batch {}, head {}: {e}",
                        i / self.heads,
                        i % self.heads
                    ))
                })?;
                // Outputs are f32: a (valid f64) state whose answers can exceed
                // f32 cannot come from values this layer accepts. With a positive map
                // any output is a convex combination of the ratios Sᵢⱼ/zᵢ; other maps
                // (trigonometric: z may be ≤ 0) give no such bound to check.
                let st = s.state();
                let limit = f64::from(f32::MAX);
                let dv = self.value_dim;
                let positive = favor_core::FeatureMap::is_positive(map);
                // z may underflow (to 0) where S does not: allow one subnormal of z.
                let sub = f64::from(f32::MIN_POSITIVE) * f64::from(f32::EPSILON);
                let at = |i, j| st.entry(i, j).unwrap_or(0.0);
                let too_big = positive
                    && (0..st.features()).any(|i| {
                        let z = at(i, None);
                        (0..dv).any(|j| at(i, Some(j)).abs() > (z + sub) * limit)
                    });
                if too_big {
                    return Err(Error::Snapshot(format!(
                        "batch {}, head {}: state values beyond the f32 output range",
                        i / self.heads,
                        i % self.heads
                    )));
                }
                drop(s); // writes the head's token count and stabiliser back
                Ok(memory)
            })
            .collect()
    }
}
