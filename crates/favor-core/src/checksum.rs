//! CRC-32 (IEEE 802.3, as zlib and PNG compute it) for snapshot integrity.

/// The reflected polynomial of CRC-32/IEEE.
const POLY: u32 = 0xEDB8_8320;

/// One table entry per byte value, built at compile time.
const TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 != 0 { POLY ^ (c >> 1) } else { c >> 1 };
            bit += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC-32/IEEE of `data` (check value: `crc32(b"123456789") == 0xCBF4_3926`).
///
/// Snapshots end with it: it detects every error burst of up to 32 bits (so every corrupted
/// byte, and every swap of two bytes), and all but 2⁻³² of the rest. It is an integrity check
/// against corruption, not a defence against deliberate tampering.
///
/// ```
/// assert_eq!(favor_core::crc32(b"123456789"), 0xCBF4_3926);
/// ```
pub fn crc32(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |c, &b| {
        TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8)
    })
}
