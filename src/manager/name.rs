//! VM names: one path component of at most [`MAX_NAME_LEN`] bytes.

use super::ManagerError;

/// Longest VM name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a VM name as Android does (no `/`, not `.` or `..`) and more: not empty, no NUL, at
/// most [`MAX_NAME_LEN`] bytes. Names longer than that are kept free for the manager's own
/// temporary entries, so those can never be mistaken for a VM.
pub fn validate(name: &str) -> Result<(), ManagerError> {
    let bad = |reason| ManagerError::BadName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name == "." || name == ".." {
        return Err(bad("\".\" and \"..\" are not names"));
    }
    if name.contains('/') {
        return Err(bad("contains '/'"));
    }
    if name.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad("longer than 64 bytes"));
    }
    Ok(())
}

/// True when `name` is a valid VM name (for listing directories).
pub fn is_valid(name: &str) -> bool {
    validate(name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "my-vm", "vm_1.2", ".hidden", "é", &"x".repeat(64)] {
            assert!(is_valid(good), "{good:?}");
        }
        for (bad, why) in [
            ("", "empty"),
            (".", "not names"),
            ("..", "not names"),
            ("a/b", "'/'"),
            ("/", "'/'"),
            ("a\0b", "NUL"),
            (&"x".repeat(65), "64 bytes"),
            (&"é".repeat(33), "64 bytes"),
        ] {
            let e = validate(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
