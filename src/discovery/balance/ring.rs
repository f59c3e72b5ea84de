//! ConsistentHash's ring: virtual nodes per endpoint name, sorted and bucketed at snapshot time
//! so a lookup is a shift and a short scan. Pure; knows nothing of endpoints beyond their names.

/// Points per endpoint. More points even out the shares (the spread shrinks like 1/sqrt(points))
/// at the price of build time; 160 keeps each share within roughly ±25% at three sigma.
pub const DEFAULT_VNODES: u32 = 160;

/// A consistent-hash ring. A key maps to the first point at or after its hash; removing an
/// endpoint removes only its points, so only the keys it owned move, and they spread over the others.
#[derive(Clone, Debug)]
pub struct HashRing {
    /// (point hash, index of the owner), sorted.
    points: Box<[(u64, u32)]>,
    /// `starts[b]` is the first point whose top bits are at least `b`: the bucket a hash falls
    /// into holds about one point, so a lookup does not binary-search.
    starts: Box<[u32]>,
    shift: u32,
    vnodes: u32,
}

impl HashRing {
    /// Builds a ring over the names (their order gives the indices `lookup` returns).
    /// Returns `None` when there are no names.
    pub fn new<S: AsRef<[u8]>>(names: &[S], vnodes: u32) -> Option<HashRing> {
        let vnodes = vnodes.max(1);
        if names.is_empty() {
            return None;
        }
        let mut points: Vec<(u64, u32)> = Vec::with_capacity(names.len() * vnodes as usize);
        for (i, name) in names.iter().enumerate() {
            // Points depend on the name alone, never on the other members, which is what
            // keeps a survivor's keys in place when the membership changes.
            let base = hash_bytes(name.as_ref());
            for v in 0..u64::from(vnodes) {
                points.push((
                    mix64(base ^ v.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                    i as u32,
                ));
            }
        }
        points.sort_unstable();
        let buckets = points.len().next_power_of_two().max(2);
        let bits = buckets.trailing_zeros();
        let shift = 64 - bits;
        let mut starts = Vec::with_capacity(buckets + 1);
        let mut p = 0usize;
        for b in 0..buckets as u64 {
            while p < points.len() && (points[p].0 >> shift) < b {
                p += 1;
            }
            starts.push(p as u32);
        }
        starts.push(points.len() as u32);
        Some(HashRing {
            points: points.into(),
            starts: starts.into(),
            shift,
            vnodes,
        })
    }

    /// Points per endpoint.
    pub fn vnodes(&self) -> u32 {
        self.vnodes
    }

    /// The index owning a key.
    #[inline]
    pub fn lookup(&self, key: &[u8]) -> usize {
        self.lookup_hash(hash_bytes(key))
    }

    /// The index owning a hash.
    #[inline]
    pub fn lookup_hash(&self, h: u64) -> usize {
        let b = (h >> self.shift) as usize;
        let mut i = self.starts[b] as usize;
        let end = self.starts[b + 1] as usize;
        while i < end && self.points[i].0 < h {
            i += 1;
        }
        // Past the bucket's last point the next point is the first of a later bucket, which is
        // exactly `end`; past the last point of all, wrap around.
        let i = if i == self.points.len() { 0 } else { i };
        self.points[i].1 as usize
    }
}

/// A stable 64-bit hash, the same in every process and release: clients built separately must
/// agree on where a key goes. Eight bytes per step (a 64x64->128 multiply folded to 64 bits),
/// because a byte-at-a-time hash was most of a pick's cost for session-id-sized keys.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    const STEP: u64 = 0x9e37_79b9_7f4a_7c15;
    const TAIL: u64 = 0xd6e8_feb8_6659_fd93;
    // The length goes in first, so zero padding of the tail cannot make two keys equal.
    let mut h = 0xcbf2_9ce4_8422_2325 ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("chunks of eight"));
        h = fold_mul(h ^ word, STEP);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut tail = [0u8; 8];
        tail[..rest.len()].copy_from_slice(rest);
        h = fold_mul(h ^ u64::from_le_bytes(tail), TAIL);
    }
    mix64(h)
}

fn fold_mul(a: u64, b: u64) -> u64 {
    let t = u128::from(a) * u128::from(b);
    (t as u64) ^ ((t >> 64) as u64)
}

/// MurmurHash3's finalizer: every input bit flips each output bit with probability about 1/2.
fn mix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("web-{i}")).collect()
    }

    fn keys(count: usize) -> Vec<Vec<u8>> {
        (0..count)
            .map(|i| format!("user-{i}").into_bytes())
            .collect()
    }

    /// Binary search over the sorted points, as a reference for the bucketed lookup.
    fn reference(ring: &HashRing, h: u64) -> usize {
        let i = ring.points.partition_point(|p| p.0 < h);
        ring.points[if i == ring.points.len() { 0 } else { i }].1 as usize
    }

    #[test]
    fn bucketed_lookup_matches_binary_search() {
        let ring = HashRing::new(&names(37), 50).unwrap();
        let mut h = 1u64;
        for _ in 0..200_000 {
            h = mix64(h.wrapping_add(0x9e37_79b9_7f4a_7c15));
            assert_eq!(ring.lookup_hash(h), reference(&ring, h));
        }
        for h in [
            0,
            u64::MAX,
            ring.points[0].0,
            ring.points[ring.points.len() - 1].0,
        ] {
            assert_eq!(ring.lookup_hash(h), reference(&ring, h));
        }
    }

    /// Removing 1 of n moves at most 1.5/n of 100k keys, and only keys the removed one owned.
    #[test]
    fn removing_one_of_n_moves_only_its_keys() {
        let keys = keys(100_000);
        for n in [10usize, 100] {
            let all = names(n);
            let before = HashRing::new(&all, DEFAULT_VNODES).unwrap();
            let removed = n / 2;
            let survivors: Vec<&String> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != removed)
                .map(|(_, s)| s)
                .collect();
            let after = HashRing::new(&survivors, DEFAULT_VNODES).unwrap();
            let mut moved = 0usize;
            for key in &keys {
                let old = &all[before.lookup(key)];
                let new = survivors[after.lookup(key)];
                if old != new {
                    assert_eq!(
                        old, &all[removed],
                        "a key on surviving {old} moved to {new}"
                    );
                    moved += 1;
                }
            }
            let fraction = moved as f64 / keys.len() as f64;
            assert!(
                fraction <= 1.5 / n as f64,
                "n={n}: {fraction:.4} of keys moved, bound {:.4}",
                1.5 / n as f64
            );
            assert!(fraction > 0.0);
        }
    }

    #[test]
    fn shares_stay_near_even() {
        let n = 20;
        let ring = HashRing::new(&names(n), DEFAULT_VNODES).unwrap();
        let mut counts = vec![0usize; n];
        for key in keys(100_000) {
            counts[ring.lookup(&key)] += 1;
        }
        let mean = 100_000.0 / n as f64;
        for (i, &c) in counts.iter().enumerate() {
            assert!(
                (c as f64 - mean).abs() / mean < 0.3,
                "endpoint {i} owns {c} keys, mean {mean}"
            );
        }
    }

    #[test]
    fn hash_is_stable_across_builds() {
        // Pinned values: a change here would send every client's keys elsewhere.
        // (Computed independently, from the definition, outside Rust.)
        assert_eq!(hash_bytes(b""), 0xefd0_1f60_ba99_2926);
        assert_eq!(hash_bytes(b"user-1"), 0xe7b4_9c5b_4658_c27b);
        assert_eq!(hash_bytes(b"web-0"), 0x6241_8ad0_4d0b_c912);
        assert_eq!(hash_bytes(b"session-0000002a"), 0x9c28_813e_4b16_7ae1);
    }
}
