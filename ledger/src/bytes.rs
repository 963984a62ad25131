//! Binary values in events: raw bytes in the binary codec, lowercase hex in
//! JSON (the canonical form, the journal and every export).

use std::fmt;

use serde::de::{Error as _, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A sha256 digest: of a chain link, a blob, a tree or a spec.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The sha256 of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest(Sha256::digest(data).into())
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        String::from_utf8(self.hex_bytes().to_vec()).expect("hex digits")
    }

    /// Lowercase hex, 64 ASCII bytes, without allocating: every record
    /// written or verified carries digests.
    pub fn hex_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        write_hex(&self.0, &mut out);
        out
    }

    /// Parses 64 hex characters.
    pub fn from_hex(text: &str) -> Option<Digest> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(Digest(out))
    }

    /// The first 12 hex characters, for tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            let hex = self.hex_bytes();
            serializer.serialize_str(std::str::from_utf8(&hex).expect("hex digits"))
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = deserialize_bytes(deserializer)?;
        let array: [u8; 32] = bytes.try_into().map_err(|bytes: Vec<u8>| {
            D::Error::custom(format!("a digest has 32 bytes, found {}", bytes.len()))
        })?;
        Ok(Digest(array))
    }
}

/// Arbitrary bytes (a BLOB value, a signature).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({})", hex::encode(&self.0))
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(bytes: Vec<u8>) -> Self {
        Bytes(bytes)
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            let mut hex = vec![0u8; self.0.len() * 2];
            write_hex(&self.0, &mut hex);
            serializer.serialize_str(std::str::from_utf8(&hex).expect("hex digits"))
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_bytes(deserializer).map(Bytes)
    }
}

/// The two hex digits of every byte.
const PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        pairs[byte] = [DIGITS[byte >> 4], DIGITS[byte & 0x0f]];
        byte += 1;
    }
    pairs
};

/// Writes `bytes` as lowercase hex into `out`, which holds twice as many
/// bytes (a packed chunk's images are a megabyte of it: one table lookup
/// a byte).
pub(crate) fn write_hex(bytes: &[u8], out: &mut [u8]) {
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair.copy_from_slice(&PAIRS[usize::from(*byte)]);
    }
}

fn deserialize_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    struct HexOrBytes;
    impl<'de> Visitor<'de> for HexOrBytes {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("lowercase hex or bytes")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Vec<u8>, E> {
            if text.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(E::custom("hex must be lowercase"));
            }
            hex::decode(text).map_err(E::custom)
        }
        fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }
        fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(bytes)
        }
    }
    if deserializer.is_human_readable() {
        deserializer.deserialize_str(HexOrBytes)
    } else {
        deserializer.deserialize_byte_buf(HexOrBytes)
    }
}
