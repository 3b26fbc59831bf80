//! Partition and shard assignment of accounts: a stable hash of `account_id`.
//!
//! The hash is 64-bit FNV-1a over the UTF-8 bytes of the id (offset basis
//! `0xcbf29ce484222325`, prime `0x100000001b3`). It is defined here, not taken
//! from `std`, so it is the same on every Rust version and machine; a golden
//! vector in the tests pins it.
//!
//! Accounts are stored with `cob_shard = hash % COB_SHARD_COUNT` (a sparse
//! index key); partition `p` of `P` reads the shards `s` with `s % P == p`.
//! Because `P` must divide [`COB_SHARD_COUNT`], that is exactly the accounts
//! with `hash % P == p`: the partition *is* the hash bucket.

/// Shards of the account index. 720 = 2⁴·3²·5 has 30 divisors, so any common
/// partition count (1–6, 8, 9, 10, 12, 15, 16, 18, 20, 24, 30, …) splits it
/// evenly.
pub const COB_SHARD_COUNT: u32 = 720;

pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

pub fn cob_shard(account_id: &str) -> u32 {
    (fnv1a_64(account_id.as_bytes()) % u64::from(COB_SHARD_COUNT)) as u32
}

/// The hash bucket (partition) of an account for `partition_count` buckets.
pub fn partition_of(account_id: &str, partition_count: u32) -> u32 {
    (fnv1a_64(account_id.as_bytes()) % u64::from(partition_count)) as u32
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("partition count {0} must be between 1 and {COB_SHARD_COUNT} and divide {COB_SHARD_COUNT} (e.g. 1, 2, 4, 5, 8, 10, 12, 16, 20, 24, 30, 40, 48, 60)")]
pub struct BadPartitionCount(pub u32);

pub fn check_partition_count(partition_count: u32) -> Result<u32, BadPartitionCount> {
    if partition_count == 0 || !COB_SHARD_COUNT.is_multiple_of(partition_count) {
        return Err(BadPartitionCount(partition_count));
    }
    Ok(partition_count)
}

/// The index shards partition `partition` of `partition_count` reads.
pub fn shards_of(partition: u32, partition_count: u32) -> impl Iterator<Item = u32> {
    (partition..COB_SHARD_COUNT).step_by(partition_count as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a_64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn golden_vector_pins_shards_and_buckets() {
        // If this changes, every stored `cob_shard` is wrong: never change it.
        let got: Vec<(u32, u32)> = ["SAV-000001", "SAV-000002", "LOAN-42", "a", "Z_9-z"]
            .iter()
            .map(|id| (cob_shard(id), partition_of(id, 10)))
            .collect();
        assert_eq!(got, GOLDEN);
    }
    // Computed independently (Python) from the FNV-1a definition.
    const GOLDEN: [(u32, u32); 5] = [(483, 3), (214, 4), (544, 4), (556, 6), (238, 8)];

    #[test]
    fn a_partition_reads_exactly_its_own_hash_bucket() {
        for p_count in [1, 4, 10, 16] {
            for i in 0..2000 {
                let id = format!("ACC-{i:06}");
                let p = partition_of(&id, p_count);
                assert!(shards_of(p, p_count).any(|s| s == cob_shard(&id)));
                for other in (0..p_count).filter(|q| *q != p) {
                    assert!(!shards_of(other, p_count).any(|s| s == cob_shard(&id)));
                }
            }
        }
    }

    #[test]
    fn shards_split_evenly_and_completely() {
        let mut seen = vec![0; COB_SHARD_COUNT as usize];
        for p in 0..10 {
            assert_eq!(shards_of(p, 10).count(), 72);
            for s in shards_of(p, 10) {
                seen[s as usize] += 1;
            }
        }
        assert!(seen.iter().all(|n| *n == 1));
    }

    #[test]
    fn partition_counts_must_divide_the_shard_space() {
        for ok in [1, 2, 10, 16, 720] {
            assert!(check_partition_count(ok).is_ok());
        }
        for bad in [0, 7, 11, 721] {
            assert!(check_partition_count(bad).is_err());
        }
    }

    #[test]
    fn buckets_are_roughly_even() {
        let mut counts = [0u32; 10];
        for i in 0..100_000 {
            counts[partition_of(&format!("SAV-{i:06}"), 10) as usize] += 1;
        }
        assert!(
            counts.iter().all(|c| (9_000..11_000).contains(c)),
            "{counts:?}"
        );
    }
}
