//! `TdImage`: the container `cargo xtask run` packs and the emulator receives
//! as its PVH module. Little endian:
//!
//! ```text
//! 0   magic "LVBSIMG1"
//! 8   version u32 = 1
//! 12  count u32 (1..=MAX_ENTRIES)
//! 16  count × { kind u32, reserved u32 = 0, offset u64, len u64 }
//!     payloads (the builder aligns each to 4 KiB)
//! ```

use alloc::vec::Vec;

/// What an entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ImageKind {
    /// The paravisor ELF (L1).
    Paravisor,
    /// The ELF of L2 VM #1 (the probe, later a kernel loader).
    L2Guest,
    /// The initrd of L2 VM #1.
    Initrd,
    /// The command line of L2 VM #1.
    Cmdline,
}

impl ImageKind {
    /// The on-disk number.
    pub const fn number(self) -> u32 {
        match self {
            ImageKind::Paravisor => 1,
            ImageKind::L2Guest => 2,
            ImageKind::Initrd => 3,
            ImageKind::Cmdline => 4,
        }
    }

    /// The kind with on-disk number `n`.
    pub const fn from_number(n: u32) -> Option<Self> {
        match n {
            1 => Some(ImageKind::Paravisor),
            2 => Some(ImageKind::L2Guest),
            3 => Some(ImageKind::Initrd),
            4 => Some(ImageKind::Cmdline),
            _ => None,
        }
    }
}

/// One entry of a parsed image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TdImageEntry<'a> {
    /// Kind.
    pub kind: ImageKind,
    /// Offset of the payload in the image.
    pub offset: u64,
    /// The payload.
    pub data: &'a [u8],
}

/// Why an image was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Shorter than its header.
    Truncated,
    /// Wrong magic.
    BadMagic,
    /// Unknown version.
    BadVersion(u32),
    /// Zero entries or more than [`TdImage::MAX_ENTRIES`].
    BadCount(u32),
    /// An entry with an unknown kind or non-zero reserved field.
    BadEntry(usize),
    /// An entry's payload lies outside the image or inside the header.
    OutOfBounds(usize),
    /// Two entries of the same kind.
    DuplicateKind(ImageKind),
    /// Two payloads overlap.
    Overlap(usize, usize),
}

/// A parsed image; payloads borrow from the input (zero copy).
#[derive(Clone, Debug)]
pub struct TdImage<'a> {
    entries: Vec<TdImageEntry<'a>>,
}

impl<'a> TdImage<'a> {
    /// The magic.
    pub const MAGIC: [u8; 8] = *b"LVBSIMG1";
    /// Format version.
    pub const VERSION: u32 = 1;
    /// Maximum number of entries.
    pub const MAX_ENTRIES: u32 = 8;
    /// Size of the fixed header.
    pub const HEADER_SIZE: usize = 16;
    /// Size of one entry descriptor.
    pub const ENTRY_SIZE: usize = 24;
    /// Alignment of payloads written by [`TdImageBuilder`].
    pub const PAYLOAD_ALIGN: usize = 4096;

    /// Parses and validates `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ImageError> {
        let header = bytes
            .get(..Self::HEADER_SIZE)
            .ok_or(ImageError::Truncated)?;
        if header[..8] != Self::MAGIC {
            return Err(ImageError::BadMagic);
        }
        let version = le_u32(&header[8..12]);
        if version != Self::VERSION {
            return Err(ImageError::BadVersion(version));
        }
        let count = le_u32(&header[12..16]);
        if count == 0 || count > Self::MAX_ENTRIES {
            return Err(ImageError::BadCount(count));
        }
        let table_end = Self::HEADER_SIZE + count as usize * Self::ENTRY_SIZE;
        let table = bytes
            .get(Self::HEADER_SIZE..table_end)
            .ok_or(ImageError::Truncated)?;
        let mut entries: Vec<TdImageEntry<'a>> = Vec::with_capacity(count as usize);
        for (i, d) in table.chunks_exact(Self::ENTRY_SIZE).enumerate() {
            let kind = ImageKind::from_number(le_u32(&d[0..4])).ok_or(ImageError::BadEntry(i))?;
            if le_u32(&d[4..8]) != 0 {
                return Err(ImageError::BadEntry(i));
            }
            let offset = le_u64(&d[8..16]);
            let len = le_u64(&d[16..24]);
            let end = offset.checked_add(len).ok_or(ImageError::OutOfBounds(i))?;
            if offset < table_end as u64 || end > bytes.len() as u64 {
                return Err(ImageError::OutOfBounds(i));
            }
            let data = &bytes[offset as usize..end as usize];
            for (j, e) in entries.iter().enumerate() {
                if e.kind == kind {
                    return Err(ImageError::DuplicateKind(kind));
                }
                let e_end = e.offset + e.data.len() as u64;
                if offset < e_end && e.offset < end && len != 0 && !e.data.is_empty() {
                    return Err(ImageError::Overlap(j, i));
                }
            }
            entries.push(TdImageEntry { kind, offset, data });
        }
        Ok(TdImage { entries })
    }

    /// All entries in image order.
    pub fn entries(&self) -> &[TdImageEntry<'a>] {
        &self.entries
    }

    /// The payload of `kind`, if present.
    pub fn get(&self, kind: ImageKind) -> Option<&'a [u8]> {
        self.entries.iter().find(|e| e.kind == kind).map(|e| e.data)
    }
}

/// Builds a [`TdImage`].
#[derive(Clone, Debug, Default)]
pub struct TdImageBuilder<'a> {
    parts: Vec<(ImageKind, &'a [u8])>,
}

impl<'a> TdImageBuilder<'a> {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the payload of `kind`.
    pub fn add(mut self, kind: ImageKind, data: &'a [u8]) -> Self {
        self.parts.retain(|(k, _)| *k != kind);
        self.parts.push((kind, data));
        self
    }

    /// The encoded image. Fails only with [`ImageError::BadCount`] (no or too many entries).
    pub fn build(&self) -> Result<Vec<u8>, ImageError> {
        let count = self.parts.len();
        if count == 0 || count > TdImage::MAX_ENTRIES as usize {
            return Err(ImageError::BadCount(count as u32));
        }
        let table_end = TdImage::HEADER_SIZE + count * TdImage::ENTRY_SIZE;
        let mut out = Vec::new();
        out.extend_from_slice(&TdImage::MAGIC);
        out.extend_from_slice(&TdImage::VERSION.to_le_bytes());
        out.extend_from_slice(&(count as u32).to_le_bytes());
        let mut offset = table_end;
        let mut offsets = Vec::with_capacity(count);
        for (kind, data) in &self.parts {
            offset = offset.next_multiple_of(TdImage::PAYLOAD_ALIGN);
            offsets.push(offset);
            out.extend_from_slice(&kind.number().to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            out.extend_from_slice(&(data.len() as u64).to_le_bytes());
            offset += data.len();
        }
        for ((_, data), off) in self.parts.iter().zip(offsets) {
            out.resize(off, 0);
            out.extend_from_slice(data);
        }
        Ok(out)
    }
}

fn le_u32(b: &[u8]) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[..4]);
    u32::from_le_bytes(v)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[..8]);
    u64::from_le_bytes(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn sample() -> Vec<u8> {
        TdImageBuilder::new()
            .add(ImageKind::Paravisor, b"paravisor-elf")
            .add(ImageKind::L2Guest, b"probe")
            .build()
            .unwrap()
    }

    #[test]
    fn round_trip() {
        let bytes = sample();
        let img = TdImage::parse(&bytes).unwrap();
        assert_eq!(img.get(ImageKind::Paravisor), Some(&b"paravisor-elf"[..]));
        assert_eq!(img.get(ImageKind::L2Guest), Some(&b"probe"[..]));
        assert_eq!(img.entries().len(), 2);
        for e in img.entries() {
            assert_eq!(e.offset % 4096, 0);
        }
    }

    #[test]
    fn builder_rejects_empty_and_replaces_duplicates() {
        assert_eq!(TdImageBuilder::new().build(), Err(ImageError::BadCount(0)));
        let b = TdImageBuilder::new()
            .add(ImageKind::L2Guest, b"a")
            .add(ImageKind::L2Guest, b"b")
            .build()
            .unwrap();
        assert_eq!(
            TdImage::parse(&b).unwrap().get(ImageKind::L2Guest),
            Some(&b"b"[..])
        );
    }

    #[test]
    fn rejects_malformed() {
        let good = sample();
        assert_eq!(
            TdImage::parse(&good[..10]).unwrap_err(),
            ImageError::Truncated
        );
        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(TdImage::parse(&b).unwrap_err(), ImageError::BadMagic);
        let mut b = good.clone();
        b[8] = 9;
        assert_eq!(TdImage::parse(&b).unwrap_err(), ImageError::BadVersion(9));
        let mut b = good.clone();
        b[12] = 0;
        assert_eq!(TdImage::parse(&b).unwrap_err(), ImageError::BadCount(0));
        let mut b = good.clone();
        b[12] = 200;
        assert_eq!(TdImage::parse(&b).unwrap_err(), ImageError::BadCount(200));
        // Unknown kind.
        let mut b = good.clone();
        b[16] = 7;
        assert_eq!(TdImage::parse(&b).unwrap_err(), ImageError::BadEntry(0));
        // Reserved non-zero.
        let mut b = good.clone();
        b[20] = 1;
        assert_eq!(TdImage::parse(&b).unwrap_err(), ImageError::BadEntry(0));
        // Length past the end.
        let mut b = good.clone();
        b[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(TdImage::parse(&b).unwrap_err(), ImageError::OutOfBounds(0));
        // Offset inside the header.
        let mut b = good.clone();
        b[24..32].copy_from_slice(&8u64.to_le_bytes());
        assert_eq!(TdImage::parse(&b).unwrap_err(), ImageError::OutOfBounds(0));
        // Duplicate kind.
        let mut b = good.clone();
        b[40] = 1;
        assert_eq!(
            TdImage::parse(&b).unwrap_err(),
            ImageError::DuplicateKind(ImageKind::Paravisor)
        );
        // Overlapping payloads.
        let mut b = good.clone();
        let off0 = b[24..32].to_vec();
        b[48..56].copy_from_slice(&off0);
        assert_eq!(TdImage::parse(&b).unwrap_err(), ImageError::Overlap(0, 1));
        // Truncated table.
        assert_eq!(
            TdImage::parse(&good[..30]).unwrap_err(),
            ImageError::Truncated
        );
    }

    #[test]
    fn no_panic_on_any_prefix_or_bit_flip() {
        let good = sample();
        for n in 0..good.len().min(200) {
            let _ = TdImage::parse(&good[..n]);
        }
        for i in 0..64 {
            for bit in 0..8 {
                let mut b = good.clone();
                b[i] ^= 1 << bit;
                let _ = TdImage::parse(&b);
            }
        }
        let _ = TdImage::parse(&vec![0xFF; 4096]);
    }
}
