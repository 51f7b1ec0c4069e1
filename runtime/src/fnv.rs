//! FNV-1a: a hash that is stable across runs and builds (the std hasher is not), for the
//! scheduler's start offsets and the config's change detection.

/// The 64-bit FNV-1a hash of `bytes`.
pub(crate) fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
