//! The landlock ruleset: the file system as far as the configuration names it, no TCP, no
//! abstract Unix sockets. Built once; every thread restricts itself with a copy of it
//! (landlock domains are per thread on kernels without `LANDLOCK_RESTRICT_SELF_TSYNC`).

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr, RulesetStatus, Scope,
};

use super::{Policy, SandboxError};

/// The newest ABI this code knows; older kernels get what they support (best effort).
const TARGET_ABI: ABI = ABI::V6;

fn err(e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Landlock(e.to_string())
}

/// The ruleset for `policy`; `None` when this kernel has no landlock at all.
pub(super) fn ruleset(policy: &Policy) -> Result<Option<RulesetCreated>, SandboxError> {
    let file = AccessFs::from_file(TARGET_ABI);
    let read = AccessFs::from_read(TARGET_ABI);
    let write = AccessFs::from_write(TARGET_ABI);
    let mut created = Ruleset::default()
        .handle_access(AccessFs::from_all(TARGET_ABI))
        .map_err(err)?
        .handle_access(AccessNet::from_all(TARGET_ABI))
        .map_err(err)?
        .scope(Scope::AbstractUnixSocket)
        .map_err(err)?
        .create()
        .map_err(err)?;
    let groups: [(&[std::path::PathBuf], BitFlags<AccessFs>); 5] = [
        (&policy.dir_parents, AccessFs::RemoveDir.into()),
        (&policy.read_only, read & file),
        (&policy.read_write, (read | write) & file),
        (&policy.dirs, AccessFs::from_all(TARGET_ABI)),
        (
            &policy.socket_dirs,
            AccessFs::RemoveFile | AccessFs::MakeSock,
        ),
    ];
    for (paths, access) in groups {
        for p in paths {
            let fd = PathFd::new(p).map_err(|e| SandboxError::Path {
                path: p.clone(),
                reason: e.to_string(),
            })?;
            created = created
                .add_rule(PathBeneath::new(fd, access))
                .map_err(err)?;
        }
    }
    let fd: Option<std::os::fd::OwnedFd> = created.try_clone().map_err(err)?.into();
    Ok(fd.map(|_| created))
}

/// Restricts the calling thread with `ruleset`.
pub(super) fn restrict(ruleset: &RulesetCreated) -> Result<(), SandboxError> {
    let status = ruleset
        .try_clone()
        .map_err(err)?
        .restrict_self()
        .map_err(err)?;
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err(SandboxError::Landlock(
            "the ruleset was not enforced".into(),
        ));
    }
    Ok(())
}
