//! Just enough DER to find a certificate's signature algorithm (for the channel binding hash).

/// The hash function a certificate's signature uses, as far as channel binding cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SigHash {
    /// SHA-256 (also for MD5, SHA-1 and anything unrecognised).
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

/// sha384WithRSAEncryption, sha512WithRSAEncryption, ecdsa-with-SHA384, ecdsa-with-SHA512.
const OIDS: [(&[u8], SigHash); 4] = [
    (&[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0C], SigHash::Sha384),
    (&[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0D], SigHash::Sha512),
    (&[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x03], SigHash::Sha384),
    (&[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x04], SigHash::Sha512),
];

/// Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm SEQUENCE { OID, ... }, ... }
pub(super) fn signature_hash(cert: &[u8]) -> SigHash {
    let oid = (|| {
        let (_, body, _) = item(cert)?;
        let (_, _tbs, rest) = item(body)?;
        let (_, alg, _) = item(rest)?;
        let (tag, oid, _) = item(alg)?;
        (tag == 0x06).then_some(oid)
    })();
    oid.and_then(|o| OIDS.iter().find(|(known, _)| *known == o).map(|(_, h)| *h)).unwrap_or(SigHash::Sha256)
}

/// One TLV: (tag, content, what follows). `None` on anything malformed.
fn item(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = buf.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(oid: &[u8]) -> Vec<u8> {
        let tbs = [0x30, 0x03, 0x02, 0x01, 0x01];
        let mut alg = vec![0x06, oid.len() as u8];
        alg.extend_from_slice(oid);
        let mut body = tbs.to_vec();
        body.extend_from_slice(&[0x30, alg.len() as u8]);
        body.extend_from_slice(&alg);
        body.extend_from_slice(&[0x03, 0x02, 0x00, 0xFF]);
        let mut cert = vec![0x30, 0x81, body.len() as u8];
        cert.extend_from_slice(&body);
        cert
    }

    #[test]
    fn signature_hash_follows_the_algorithm_and_defaults_to_sha256() {
        for (oid, want) in OIDS {
            assert_eq!(signature_hash(&cert_with(oid)), want);
        }
        // sha256WithRSAEncryption, ecdsa-with-SHA256, sha1WithRSAEncryption
        assert_eq!(signature_hash(&cert_with(&[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 1, 1, 0x0B])), SigHash::Sha256);
        assert_eq!(signature_hash(&cert_with(&[0x2A, 0x86, 0x48, 0xCE, 0x3D, 4, 3, 2])), SigHash::Sha256);
        assert_eq!(signature_hash(&cert_with(&[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 1, 1, 5])), SigHash::Sha256);
        for truncated in 0..10 {
            assert_eq!(signature_hash(&cert_with(OIDS[0].0)[..truncated]), SigHash::Sha256);
        }
    }
}
