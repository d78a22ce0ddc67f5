//! Merkle tree hashing for the audit log, as in RFC 6962 §2.1 and its successor RFC 9162 §2.1.
//!
//! Leaves and interior nodes are hashed with distinct prefixes ([`leaf_hash`], [`node_hash`]),
//! so no leaf can pose as a subtree. [`root`] is the Merkle Tree Hash of a list of leaf hashes;
//! [`Frontier`] computes the same root incrementally, keeping one hash per set bit of the size.
//! [`inclusion_proof`] and [`consistency_proof`] build the proofs that [`verify_inclusion`]
//! and [`verify_consistency`] check. The verifiers follow RFC 9162's bit-twiddling algorithms
//! step by step and accept only proofs of exactly the right length: a truncated, extended or
//! reordered proof fails, as does every size or index outside the algorithms' domain.
//!
//! Sizes and indices are `u64`, like the tree size of a checkpoint. Nothing here does I/O.

use sha2::{Digest as _, Sha256};

/// A SHA-256 digest: a leaf hash, an interior node or a tree root.
pub type Hash = [u8; 32];

/// Why a proof is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The index is not below the tree size, or the old tree is larger than the new one.
    #[error("leaf index or tree size out of range")]
    OutOfRange,
    /// A consistency proof from the empty tree proves nothing and is never accepted: every
    /// tree extends the empty one, so a caller with no earlier checkpoint needs no proof.
    #[error("no consistency proof exists from an empty tree")]
    EmptyOldTree,
    /// The proof has more or fewer hashes than the sizes call for.
    #[error("proof has the wrong number of hashes")]
    WrongLength,
    /// The proof is well formed but does not lead to the given root(s).
    #[error("proof does not match the root hash")]
    Mismatch,
}

/// The hash of one log entry: SHA-256(0x00 ‖ entry) (RFC 6962 §2.1).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([0x00])
        .chain_update(entry)
        .finalize()
        .into()
}

/// The hash of an interior node: SHA-256(0x01 ‖ left ‖ right) (RFC 6962 §2.1).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new()
        .chain_update([0x01])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// The root of the empty tree: SHA-256 of the empty string (RFC 6962 §2.1).
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The Merkle Tree Hash `MTH(D[n])` of RFC 6962 §2.1: split at the largest power of two below
/// n, hash each side, combine.
pub fn root(leaf_hashes: &[Hash]) -> Hash {
    match leaf_hashes {
        [] => empty_root(),
        [leaf] => *leaf,
        _ => {
            let (left, right) = leaf_hashes.split_at(split(leaf_hashes.len()));
            node_hash(&root(left), &root(right))
        }
    }
}

/// The largest power of two strictly below `n`; `n` is at least 2.
fn split(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// A compact range over leaves `0..size`: the roots of the perfect subtrees that make up the
/// tree, one per set bit of `size`, largest (leftmost) first. Appending is a binary-counter
/// carry; the root folds the subtrees from the right, which is exactly MTH's split.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a frontier saved with [`Frontier::size`] and [`Frontier::hashes`]; `None`
    /// unless there is exactly one hash per set bit of `size`.
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Option<Self> {
        (hashes.len() == size.count_ones() as usize).then_some(Self { size, hashes })
    }

    /// Appends a leaf hash: O(log n) time, never more than 64 hashes held.
    pub fn push(&mut self, leaf_hash: Hash) {
        let mut hash = leaf_hash;
        let mut carry = self.size;
        while carry & 1 == 1 {
            // One hash per set bit of `size`: there is always a left sibling to pop here.
            let Some(left) = self.hashes.pop() else { break };
            hash = node_hash(&left, &hash);
            carry >>= 1;
        }
        self.hashes.push(hash);
        // 2^64 appends cannot happen; the overflow check stays as a tripwire in debug builds.
        self.size += 1;
    }

    /// The number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect-subtree roots, largest first (what [`Frontier::from_parts`] takes back).
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// The tree's root, equal to [`root`] over every leaf appended.
    pub fn root(&self) -> Hash {
        let mut from_right = self.hashes.iter().rev();
        match from_right.next() {
            None => empty_root(),
            Some(last) => from_right.fold(*last, |acc, left| node_hash(left, &acc)),
        }
    }
}

/// The audit path `PATH(m, D[n])` of RFC 6962 §2.1.1 for the leaf at `index`, bottom first.
pub fn inclusion_proof(leaf_hashes: &[Hash], index: u64) -> Result<Vec<Hash>, ProofError> {
    let index = usize::try_from(index).map_err(|_| ProofError::OutOfRange)?;
    if index >= leaf_hashes.len() {
        return Err(ProofError::OutOfRange);
    }
    let mut proof = Vec::new();
    path(index, leaf_hashes, &mut proof);
    Ok(proof)
}

fn path(m: usize, leaves: &[Hash], proof: &mut Vec<Hash>) {
    if leaves.len() < 2 {
        return;
    }
    let k = split(leaves.len());
    let (left, right) = leaves.split_at(k);
    if m < k {
        path(m, left, proof);
        proof.push(root(right));
    } else {
        path(m - k, right, proof);
        proof.push(root(left));
    }
}

/// The consistency proof `PROOF(m, D[n])` of RFC 6962 §2.1.2 from the first `old_size` leaves
/// to all of them. Empty when the sizes are equal; none exists from the empty tree.
pub fn consistency_proof(leaf_hashes: &[Hash], old_size: u64) -> Result<Vec<Hash>, ProofError> {
    let m = usize::try_from(old_size).map_err(|_| ProofError::OutOfRange)?;
    if m == 0 {
        return Err(ProofError::EmptyOldTree);
    }
    if m > leaf_hashes.len() {
        return Err(ProofError::OutOfRange);
    }
    let mut proof = Vec::new();
    subproof(m, leaf_hashes, true, &mut proof);
    Ok(proof)
}

/// `SUBPROOF(m, D[n], b)` of RFC 6962 §2.1.2; `complete` is b: D[0:m] is the old tree itself.
fn subproof(m: usize, leaves: &[Hash], complete: bool, proof: &mut Vec<Hash>) {
    if m == leaves.len() {
        if !complete {
            proof.push(root(leaves));
        }
        return;
    }
    // Here 0 < m < n, so n >= 2.
    let k = split(leaves.len());
    let (left, right) = leaves.split_at(k);
    if m <= k {
        subproof(m, left, complete, proof);
        proof.push(root(right));
    } else {
        subproof(m - k, right, false, proof);
        proof.push(root(left));
    }
}

/// Checks that `leaf_hash` is the leaf at `index` of the tree of `size` leaves with root
/// `root`: RFC 9162 §2.1.3.2, step for step.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf_hash: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    // 1. leaf_index must be below tree_size.
    if index >= size {
        return Err(ProofError::OutOfRange);
    }
    // 2., 3.
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf_hash;
    // 4.
    for p in proof {
        // 4a. More hashes than levels.
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        // 4b.
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        // 4c.
        f >>= 1;
        s >>= 1;
    }
    // 5. Fewer hashes than levels, or the wrong root.
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    if r != *root {
        return Err(ProofError::Mismatch);
    }
    Ok(())
}

/// Checks that the tree of `size2` leaves with root `root2` extends the tree of `size1`
/// leaves with root `root1`: RFC 9162 §2.1.4.2, step for step, for 0 < size1 < size2. Equal
/// sizes need an empty proof and equal roots; `size1 == 0` is [`ProofError::EmptyOldTree`].
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    root1: &Hash,
    root2: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if size1 > size2 {
        return Err(ProofError::OutOfRange);
    }
    if size1 == 0 {
        return Err(ProofError::EmptyOldTree);
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        if root1 != root2 {
            return Err(ProofError::Mismatch);
        }
        return Ok(());
    }
    // 1. An empty proof fails.
    let Some((head, tail)) = proof.split_first() else {
        return Err(ProofError::WrongLength);
    };
    // 2. If first is an exact power of two, the path starts at first_hash itself.
    let (seed, rest) = if size1.is_power_of_two() {
        (*root1, proof)
    } else {
        (*head, tail)
    };
    // 3.
    let (mut f, mut s) = (size1 - 1, size2 - 1);
    // 4.
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    // 5.
    let (mut fr, mut sr) = (seed, seed);
    // 6.
    for c in rest {
        // 6a.
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        // 6b.
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        // 6c.
        f >>= 1;
        s >>= 1;
    }
    // 7.
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr != *root1 || sr != *root2 {
        return Err(ProofError::Mismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::hex;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use std::path::{Path, PathBuf};

    /// The transparency-dev/merkle vectors (shared/testdata/rfc6962-vectors). From the scratch
    /// crate at /work/scratch/tlog it is two levels up; from crates/voxgate in the main repo
    /// it is three (`/../../../shared/...`).
    const VECTORS: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testdata/rfc6962-vectors"
    );

    /// The leaves of RFC 6962's reference tree, which the vectors' happy paths are built from.
    const RFC_LEAVES: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct InclusionCase {
        leaf_idx: u64,
        tree_size: u64,
        root: String,
        leaf_hash: String,
        proof: Option<Vec<String>>,
        desc: String,
        want_err: bool,
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct ConsistencyCase {
        size1: u64,
        size2: u64,
        root1: String,
        root2: String,
        proof: Option<Vec<String>>,
        desc: String,
        want_err: bool,
    }

    /// Decodes a vector's hash of the given role ("leaf", "root", "proof"). Some negative
    /// cases (and one positive: equal sizes with equal 12-byte "don't care" roots) hold values
    /// that are not 32 bytes, which a typed `Hash` cannot carry: a real caller rejects them
    /// when decoding. To still run the verifier on them, such a value becomes SHA-256 of its
    /// role and bytes: equal values of one role stay equal (two roots compared for equality),
    /// and it matches no hash of another role nor any hash a proof computes (Go's verifier
    /// rejects a leaf hash of the wrong length outright). `odd` counts these values.
    fn hash(role: &str, b64: &str, odd: &mut usize) -> Hash {
        let bytes = STANDARD.decode(b64).expect("vector base64");
        bytes.as_slice().try_into().unwrap_or_else(|_| {
            *odd += 1;
            Sha256::new()
                .chain_update(format!("not a 32-byte {role} hash:"))
                .chain_update(&bytes)
                .finalize()
                .into()
        })
    }

    /// Every `*.json` below `dir`, sorted; a missing directory fails the test.
    fn json_files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("vectors missing at {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                out.extend(json_files(&path));
            } else if path.extension().is_some_and(|e| e == "json") {
                out.push(path);
            }
        }
        out.sort();
        out
    }

    fn read<T: serde::de::DeserializeOwned>(path: &Path) -> T {
        let text = std::fs::read_to_string(path).expect("read vector");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Runs `check` on every case under `VECTORS/<kind>`; returns (cases, wantErr cases,
    /// values that are not 32 bytes). The callers pin all three, so a vector that silently
    /// stops being read fails the test.
    fn run_dir<T: serde::de::DeserializeOwned>(
        kind: &str,
        check: impl Fn(&T, &mut usize) -> (bool, bool, String),
    ) -> (usize, usize, usize) {
        let (mut total, mut negative, mut odd) = (0, 0, 0);
        for path in json_files(&Path::new(VECTORS).join(kind)) {
            let case: T = read(&path);
            let (want_err, got_err, desc) = check(&case, &mut odd);
            assert_eq!(got_err, want_err, "{}: {desc}", path.display());
            total += 1;
            negative += usize::from(want_err);
        }
        (total, negative, odd)
    }

    // subtreeinclusion/ and subtreeconsistency/ are not run: they are proofs about an
    // arbitrary subtree [start, end) of a tree (Merkle Tree Certificates' subtree proofs),
    // an API this module does not have. Their cases carry `start`/`end` instead of a single
    // index or old size, so no function here can be asked their question.

    #[test]
    fn every_inclusion_vector() {
        let (total, negative, odd) = run_dir("inclusion", |c: &InclusionCase, odd| {
            let proof: Vec<Hash> = c
                .proof
                .iter()
                .flatten()
                .map(|p| hash("proof", p, odd))
                .collect();
            let (leaf, root) = (hash("leaf", &c.leaf_hash, odd), hash("root", &c.root, odd));
            let got = verify_inclusion(c.leaf_idx, c.tree_size, &leaf, &proof, &root);
            (c.want_err, got.is_err(), c.desc.clone())
        });
        assert_eq!(
            (total, negative, odd),
            (98, 92, 27),
            "the vector set changed: recount"
        );
    }

    #[test]
    fn every_consistency_vector() {
        let (total, negative, odd) = run_dir("consistency", |c: &ConsistencyCase, odd| {
            let proof: Vec<Hash> = c
                .proof
                .iter()
                .flatten()
                .map(|p| hash("proof", p, odd))
                .collect();
            let (r1, r2) = (hash("root", &c.root1, odd), hash("root", &c.root2, odd));
            let got = verify_consistency(c.size1, c.size2, &r1, &r2, &proof);
            (c.want_err, got.is_err(), c.desc.clone())
        });
        assert_eq!(
            (total, negative, odd),
            (98, 92, 35),
            "the vector set changed: recount"
        );
    }

    /// Our generator and root agree with the vectors' happy paths, all cut from RFC 6962's
    /// reference tree: an independent check of `root`, `inclusion_proof` and
    /// `consistency_proof`.
    #[test]
    fn generated_proofs_equal_the_vectors_happy_paths() {
        let leaves: Vec<Hash> = RFC_LEAVES.iter().map(|e| leaf_hash(e)).collect();
        let mut odd = 0;
        for n in 0..5 {
            let dir = Path::new(VECTORS).join("inclusion").join(n.to_string());
            let c: InclusionCase = read(&dir.join("happy-path.json"));
            let tree = &leaves[..c.tree_size as usize];
            let want: Vec<Hash> = c
                .proof
                .iter()
                .flatten()
                .map(|p| hash("proof", p, &mut odd))
                .collect();
            assert_eq!(inclusion_proof(tree, c.leaf_idx), Ok(want), "inclusion/{n}");
            assert_eq!(root(tree), hash("root", &c.root, &mut odd), "inclusion/{n}");

            let dir = Path::new(VECTORS).join("consistency").join(n.to_string());
            let c: ConsistencyCase = read(&dir.join("happy-path.json"));
            let want: Vec<Hash> = c
                .proof
                .iter()
                .flatten()
                .map(|p| hash("proof", p, &mut odd))
                .collect();
            let tree = &leaves[..c.size2 as usize];
            assert_eq!(
                consistency_proof(tree, c.size1),
                Ok(want),
                "consistency/{n}"
            );
            assert_eq!(
                root(&tree[..c.size1 as usize]),
                hash("root", &c.root1, &mut odd)
            );
        }
        assert_eq!(odd, 0);
        assert_eq!(
            hex(&root(&leaves)),
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
        );
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn known_hashes() {
        assert_eq!(
            hex(&empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(root(&[]), empty_root());
        assert_eq!(
            hex(&leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        let (l, r) = (leaf_hash(b"a"), leaf_hash(b"b"));
        let mut joined = vec![1u8];
        joined.extend_from_slice(&l);
        joined.extend_from_slice(&r);
        assert_eq!(node_hash(&l, &r), <Hash>::from(Sha256::digest(&joined)));
    }

    #[test]
    fn frontier_equals_root_for_every_size_to_300() {
        let all = leaves(300);
        let mut frontier = Frontier::new();
        assert_eq!(frontier.root(), empty_root());
        for (n, leaf) in all.iter().enumerate() {
            frontier.push(*leaf);
            assert_eq!(frontier.size(), n as u64 + 1);
            assert_eq!(frontier.root(), root(&all[..=n]), "size {}", n + 1);
            assert_eq!(frontier.hashes().len(), (n + 1).count_ones() as usize);
            let restored = Frontier::from_parts(frontier.size(), frontier.hashes().to_vec());
            assert_eq!(restored.as_ref(), Some(&frontier));
        }
        assert_eq!(Frontier::from_parts(3, vec![[0; 32]]), None);
    }

    /// Every generated proof verifies, and flipping any bit of any byte of the proof, the
    /// leaf or the root, or adding or removing a hash, makes it fail.
    #[test]
    fn inclusion_proofs_to_64_verify_and_resist_tampering() {
        let all = leaves(64);
        for size in 1..=64u64 {
            let tree = &all[..size as usize];
            let r = root(tree);
            for index in 0..size {
                let leaf = tree[index as usize];
                let proof = inclusion_proof(tree, index).expect("in range");
                assert_eq!(verify_inclusion(index, size, &leaf, &proof, &r), Ok(()));
                for i in 0..32 {
                    let mut bad = leaf;
                    bad[i] ^= 1;
                    assert!(verify_inclusion(index, size, &bad, &proof, &r).is_err());
                    let mut bad = r;
                    bad[i] ^= 0x80;
                    assert!(verify_inclusion(index, size, &leaf, &proof, &bad).is_err());
                    for j in 0..proof.len() {
                        let mut bad = proof.clone();
                        bad[j][i] ^= 1;
                        assert!(verify_inclusion(index, size, &leaf, &bad, &r).is_err());
                    }
                }
                let mut longer = proof.clone();
                longer.push(r);
                assert_eq!(
                    verify_inclusion(index, size, &leaf, &longer, &r),
                    Err(ProofError::WrongLength)
                );
                if let Some((_, shorter)) = proof.split_last() {
                    assert!(verify_inclusion(index, size, &leaf, shorter, &r).is_err());
                }
            }
            assert_eq!(inclusion_proof(tree, size), Err(ProofError::OutOfRange));
            assert_eq!(
                verify_inclusion(size, size, &all[0], &[], &r),
                Err(ProofError::OutOfRange)
            );
        }
    }

    #[test]
    fn consistency_proofs_to_64_verify_and_resist_tampering() {
        let all = leaves(64);
        for n in 1..=64u64 {
            let tree = &all[..n as usize];
            let r2 = root(tree);
            for m in 1..=n {
                let r1 = root(&tree[..m as usize]);
                let proof = consistency_proof(tree, m).expect("in range");
                assert_eq!(
                    verify_consistency(m, n, &r1, &r2, &proof),
                    Ok(()),
                    "{m} {n}"
                );
                for i in 0..32 {
                    let (mut bad1, mut bad2) = (r1, r2);
                    bad1[i] ^= 1;
                    bad2[i] ^= 0x80;
                    assert!(verify_consistency(m, n, &bad1, &r2, &proof).is_err());
                    assert!(verify_consistency(m, n, &r1, &bad2, &proof).is_err());
                    for j in 0..proof.len() {
                        let mut bad = proof.clone();
                        bad[j][i] ^= 1;
                        assert!(verify_consistency(m, n, &r1, &r2, &bad).is_err());
                    }
                }
                let mut longer = proof.clone();
                longer.push(r1);
                assert!(verify_consistency(m, n, &r1, &r2, &longer).is_err());
                if let Some((_, shorter)) = proof.split_last() {
                    assert!(verify_consistency(m, n, &r1, &r2, shorter).is_err());
                }
                if m < n {
                    assert!(verify_consistency(m, n, &r2, &r1, &proof).is_err());
                }
            }
            assert_eq!(consistency_proof(tree, 0), Err(ProofError::EmptyOldTree));
            assert_eq!(consistency_proof(tree, n + 1), Err(ProofError::OutOfRange));
        }
    }

    #[test]
    fn consistency_edge_cases() {
        let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
        assert_eq!(verify_consistency(3, 3, &a, &a, &[]), Ok(()));
        assert_eq!(
            verify_consistency(3, 3, &a, &b, &[]),
            Err(ProofError::Mismatch)
        );
        assert_eq!(
            verify_consistency(3, 3, &a, &a, &[a]),
            Err(ProofError::WrongLength)
        );
        for (size2, proof) in [(0, &[][..]), (0, &[a][..]), (5, &[][..]), (5, &[a][..])] {
            assert_eq!(
                verify_consistency(0, size2, &a, &a, proof),
                Err(ProofError::EmptyOldTree)
            );
        }
        assert_eq!(
            verify_consistency(4, 3, &a, &b, &[]),
            Err(ProofError::OutOfRange)
        );
        assert_eq!(
            verify_consistency(3, 4, &a, &b, &[]),
            Err(ProofError::WrongLength)
        );
        assert_eq!(
            verify_consistency(u64::MAX - 1, u64::MAX, &a, &b, &[a; 3]),
            Err(ProofError::WrongLength)
        );
    }
}
