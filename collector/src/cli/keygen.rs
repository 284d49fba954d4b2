//! `collector keygen`: creates the pseudonymization key file, or rotates it by adding a new
//! active key; prints the new key id only, never a secret.
use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use time::OffsetDateTime;

use super::KeygenArgs;
use crate::privacy::keys::generate_key;

/// Runs `collector keygen`: the key id on stdout, what was done on stderr.
pub fn run(args: &KeygenArgs) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    keygen(
        &args.out,
        OffsetDateTime::now_utc(),
        &mut stdout.lock(),
        &mut stderr.lock(),
    )
}

/// Adds a key to `path` created at `now`; writes its id to `out` and a note to `note`.
pub fn keygen(
    path: &Path,
    now: OffsetDateTime,
    out: &mut dyn Write,
    note: &mut dyn Write,
) -> anyhow::Result<()> {
    let generated = generate_key(path, now)
        .with_context(|| format!("cannot add a key to {}", path.display()))?;
    writeln!(out, "{}", generated.id)?;
    if generated.previous_keys == 0 {
        writeln!(
            note,
            "created {} (mode 0600); active key {}",
            path.display(),
            generated.id
        )?;
    } else {
        writeln!(
            note,
            "added key {} to {}: it is now the only active key; {} older key(s) kept for lookups",
            generated.id,
            path.display(),
            generated.previous_keys
        )?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::privacy::KeyRing;

    #[test]
    fn prints_the_id_and_never_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        for expected_id in ["k1", "k2"] {
            let (mut out, mut note) = (Vec::new(), Vec::new());
            keygen(&path, OffsetDateTime::UNIX_EPOCH, &mut out, &mut note).unwrap();
            assert_eq!(
                String::from_utf8(out.clone()).unwrap(),
                format!("{expected_id}\n")
            );
            let ring = KeyRing::load(&path).unwrap();
            for key in ring.lookup_order() {
                let secret = key.secret().expose();
                let printed = [&out[..], &note[..]].concat();
                let printed = String::from_utf8(printed).unwrap().to_lowercase();
                for form in [
                    data_encoding::HEXLOWER.encode(secret),
                    data_encoding::BASE64.encode(secret).to_lowercase(),
                    data_encoding::BASE64_NOPAD.encode(secret).to_lowercase(),
                ] {
                    // Any 8-character window of an encoding would already leak.
                    for window in form.as_bytes().windows(8) {
                        let w = std::str::from_utf8(window).unwrap();
                        assert!(!printed.contains(w), "secret fragment printed");
                    }
                }
            }
            // The secret did reach the file, in hex.
            let file = std::fs::read_to_string(&path).unwrap();
            assert!(file.contains(&data_encoding::HEXLOWER.encode(ring.active().secret().expose())));
        }
    }
}
