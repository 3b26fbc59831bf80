//! Which transaction IDs a file has already used, in fixed memory.
//!
//! A Bloom filter of [`BLOOM_BITS`] bits (16 MiB, whatever the file's size)
//! with [`BLOOM_HASHES`] probes per ID. An ID whose probes are all set may
//! have been seen before: its 64-bit fingerprint (`fnv1a_64`) becomes a
//! *suspect*. A repeated ID is always a suspect (no false negatives); a new
//! one is a suspect only by a false positive, about (1 − e^(−3n/2²⁷))³:
//! ~10⁻⁸ per ID at 100,000 IDs, ~10⁻³ at 5 million (a 1 GB settlement file,
//! so a few thousand suspects, 8 bytes each). Suspects are confirmed or
//! cleared exactly by a second pass through
//! [`DuplicateCheck`](super::settlement::DuplicateCheck), which keeps only
//! the IDs whose fingerprint is a suspect.
//!
//! So memory is flat in the file's size (the filter) plus 8 bytes per
//! suspect, instead of 8 bytes per record.

use crate::partition::fnv1a_64;

/// Bits in the filter: 2²⁷ (16 MiB).
pub const BLOOM_BITS: u64 = 1 << 27;
/// Probes per ID.
pub const BLOOM_HASHES: u64 = 3;

pub struct SeenIds {
    /// Allocated on the first ID (zeroed pages cost nothing until touched).
    bits: Vec<u64>,
    suspects: Vec<u64>,
}

impl std::fmt::Debug for SeenIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeenIds")
            .field("bits_allocated", &!self.bits.is_empty())
            .field("suspects", &self.suspects.len())
            .finish()
    }
}

impl Default for SeenIds {
    fn default() -> Self {
        SeenIds::new()
    }
}

/// splitmix64's finaliser: spreads FNV's bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl SeenIds {
    pub fn new() -> SeenIds {
        SeenIds {
            bits: Vec::new(),
            suspects: Vec::new(),
        }
    }

    /// Notes `id`; if it may have been seen before, its fingerprint becomes
    /// a suspect.
    pub fn insert(&mut self, id: &str) {
        if self.bits.is_empty() {
            self.bits = vec![0u64; (BLOOM_BITS / 64) as usize];
        }
        let fingerprint = fnv1a_64(id.as_bytes());
        let h1 = mix(fingerprint);
        let h2 = mix(h1) | 1;
        let mut all_set = true;
        for i in 0..BLOOM_HASHES {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) % BLOOM_BITS;
            let (word, mask) = ((bit / 64) as usize, 1u64 << (bit % 64));
            all_set &= self.bits[word] & mask != 0;
            self.bits[word] |= mask;
        }
        if all_set {
            self.suspects.push(fingerprint);
        }
    }

    /// The suspects' fingerprints, sorted, each once.
    pub fn into_suspects(mut self) -> Vec<u64> {
        self.suspects.sort_unstable();
        self.suspects.dedup();
        self.suspects
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_id_is_always_a_suspect() {
        let mut s = SeenIds::new();
        for i in 0..1_000 {
            s.insert(&format!("TX{i:016}"));
        }
        s.insert("TX0000000000000007");
        s.insert("TX0000000000000999");
        s.insert("TX0000000000000007");
        let suspects = s.into_suspects();
        for id in ["TX0000000000000007", "TX0000000000000999"] {
            assert!(suspects.contains(&fnv1a_64(id.as_bytes())), "{id}");
        }
    }

    #[test]
    fn distinct_ids_rarely_become_suspects() {
        let mut s = SeenIds::new();
        for i in 0..200_000u64 {
            s.insert(&format!("TX{:016X}", mix(i)));
        }
        // Expected false positives at 200,000 IDs: ~200,000 × 7e-8 ≈ 0.01.
        assert!(s.into_suspects().len() <= 2);
    }

    #[test]
    fn an_empty_set_allocates_nothing() {
        let s = SeenIds::new();
        assert!(s.bits.is_empty());
        assert!(s.into_suspects().is_empty());
    }
}
