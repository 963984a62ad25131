//! Signed checkpoints: a statement, signed with an ed25519 key the operator
//! keeps elsewhere, that the chain had a given head at a given seq.
//!
//! A hash chain alone cannot show that its newest events were cut off, or
//! that whoever holds the store recomputed every hash. A checkpoint can: the
//! head it names is kept outside the host, and nobody without the key can
//! sign another.
//!
//! The signed message is the UTF-8 text
//! `rewind-checkpoint-v1:<ledger_id>:<seq>:<head hex>`; a `Checkpoint` event
//! appended at seq `n + 1` always names seq `n` and its hash, which is the
//! event's own `prev`.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::bytes::{Bytes, Digest};
use crate::event::Checkpoint;

/// The message a checkpoint signs.
pub fn message(ledger_id: &str, seq: u64, head: &Digest) -> String {
    format!("rewind-checkpoint-v1:{ledger_id}:{seq}:{head}")
}

/// Signs the head `(seq, head)` of a ledger with a 32-byte ed25519 seed.
pub fn sign(ledger_id: &str, seq: u64, head: &Digest, seed: &[u8; 32]) -> Checkpoint {
    let key = SigningKey::from_bytes(seed);
    let signature = key.sign(message(ledger_id, seq, head).as_bytes());
    Checkpoint {
        head: *head,
        public_key: Bytes(key.verifying_key().to_bytes().to_vec()),
        seq,
        signature: Bytes(signature.to_bytes().to_vec()),
    }
}

/// The public key of a seed, as stored in checkpoints.
pub fn public_key(seed: &[u8; 32]) -> [u8; 32] {
    SigningKey::from_bytes(seed).verifying_key().to_bytes()
}

/// Whether the checkpoint's signature is valid for its own public key.
pub fn is_valid(ledger_id: &str, checkpoint: &Checkpoint) -> bool {
    let Ok(key_bytes) = <[u8; 32]>::try_from(checkpoint.public_key.as_slice()) else {
        return false;
    };
    let Ok(key) = VerifyingKey::from_bytes(&key_bytes) else {
        return false;
    };
    let Ok(signature) = Signature::from_slice(checkpoint.signature.as_slice()) else {
        return false;
    };
    key.verify(
        message(ledger_id, checkpoint.seq, &checkpoint.head).as_bytes(),
        &signature,
    )
    .is_ok()
}

/// Why a `Checkpoint` event recorded at `seq` with predecessor hash `prev`
/// is not valid, if it is not.
pub fn problem(
    ledger_id: &str,
    seq: u64,
    prev: &Digest,
    checkpoint: &Checkpoint,
) -> Option<String> {
    if checkpoint.seq + 1 != seq || checkpoint.head != *prev {
        return Some(format!(
            "the checkpoint names seq {} with head {} but follows seq {} with head {}",
            checkpoint.seq,
            checkpoint.head.short(),
            seq - 1,
            prev.short()
        ));
    }
    if !is_valid(ledger_id, checkpoint) {
        return Some("the checkpoint's signature does not verify".into());
    }
    None
}

impl crate::store::Ledger {
    /// Signs the current head and appends the `Checkpoint` event.
    pub fn checkpoint(&mut self, seed: &[u8; 32]) -> crate::error::Result<crate::record::Entry> {
        let (seq, head) = self.head();
        let checkpoint = sign(self.ledger_id(), seq, &head, seed);
        self.append(None, crate::event::Event::Checkpoint(checkpoint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_any_change_breaks_it() {
        let seed = [7u8; 32];
        let head = Digest::of(b"head");
        let checkpoint = sign("ledger", 41, &head, &seed);
        assert!(is_valid("ledger", &checkpoint));
        assert!(!is_valid("other-ledger", &checkpoint));
        let mut moved = checkpoint.clone();
        moved.seq = 40;
        assert!(!is_valid("ledger", &moved));
        let mut other_head = checkpoint.clone();
        other_head.head = Digest::of(b"forged");
        assert!(!is_valid("ledger", &other_head));
        let mut other_key = checkpoint;
        other_key.public_key = Bytes(public_key(&[8u8; 32]).to_vec());
        assert!(!is_valid("ledger", &other_key));
    }
}
