//! The Landlock ruleset of one program: what it may read, write and
//! execute, and which TCP ports it may connect to. Built in the host; the
//! child only enforces it.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreatedAttr, Scope, ABI,
};

use super::Request;
use crate::step::grants::{NetworkAccess, PathAccess, SandboxPlan};

/// System directories a program may read (not execute: only the step's
/// granted programs and their dynamic loader may be `execve`d).
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32",
];
/// Single files of `/etc` every program may read (the dynamic loader's
/// configuration, the time zone). The rest of `/etc` stays closed.
const SYSTEM_FILES: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.preload",
    "/etc/localtime",
    "/etc/timezone",
];
/// Directories of `/etc` every program may read.
const SYSTEM_ETC_DIRS: &[&str] = &["/etc/ld.so.conf.d"];
/// Devices a program may read and write.
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// The Landlock rules of one program, as `(path, access)`.
fn fs_rules(request: &Request, plan: &SandboxPlan, abi: ABI) -> Vec<(PathBuf, BitFlags<AccessFs>)> {
    // Execute is granted on the programs alone: no directory rule carries
    // it, so nothing copied into a writable directory can be run either.
    let no_exec = !BitFlags::from(AccessFs::Execute);
    let executable = AccessFs::from_read(abi) & AccessFs::from_file(abi);
    let read_dir = AccessFs::from_read(abi) & no_exec;
    let read_file = executable & no_exec;
    let read_only = AccessFs::ReadFile | AccessFs::ReadDir;
    let write_file = AccessFs::from_file(abi) & no_exec;
    let all = AccessFs::from_all(abi) & no_exec;
    let mut rules: Vec<(PathBuf, BitFlags<AccessFs>)> = Vec::new();
    let mut add = |path: &Path, dir: BitFlags<AccessFs>, file: BitFlags<AccessFs>| {
        if let Ok(meta) = std::fs::metadata(path) {
            let access = if meta.is_dir() { dir } else { file };
            rules.push((path.to_path_buf(), access));
        }
    };
    for dir in SYSTEM_DIRS {
        add(Path::new(dir), read_dir, read_file);
    }
    for file in SYSTEM_FILES {
        add(
            Path::new(file),
            read_only,
            read_only & AccessFs::from_file(abi),
        );
    }
    for dir in SYSTEM_ETC_DIRS {
        add(
            Path::new(dir),
            read_only,
            read_only & AccessFs::from_file(abi),
        );
    }
    for device in DEVICES {
        add(Path::new(device), write_file, write_file);
    }
    // What the grants allow (their sandbox plan, see `crate::step::grants`).
    // Only the programs the step may start can be executed, by anything in
    // the tree (a rule on each file): the program itself, the `exec`
    // grants, and the dynamic loader each names (the kernel opens it for
    // execution too). A granted script's `#!` interpreter is granted with
    // it.
    let granted = plan
        .paths
        .iter()
        .map(|(path, access)| (path.as_path(), *access));
    for (path, access) in std::iter::once((request.program, PathAccess::Execute)).chain(granted) {
        match access {
            PathAccess::Read => add(path, read_dir, read_file),
            PathAccess::ReadWrite => add(path, all, write_file),
            PathAccess::Execute => {
                let interpreter = script_interpreter(path);
                for file in std::iter::once(path).chain(interpreter.as_deref()) {
                    add(file, read_dir, executable);
                    if let Some(loader) = elf_interpreter(file) {
                        add(&loader, read_dir, executable);
                    }
                }
            }
        }
    }
    add(request.private_dir, all, write_file);
    rules
}

/// The interpreter a script names on its `#!` line, canonical; `None` for
/// anything else.
fn script_interpreter(program: &Path) -> Option<PathBuf> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let mut file = std::fs::File::open(program).ok()?;
    let read = file.read(&mut head).ok()?;
    let line = head[..read].strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|b| *b == b'\n')?];
    let text = std::str::from_utf8(line).ok()?;
    let path = text.split_whitespace().next()?;
    std::fs::canonicalize(path).ok()
}

/// The dynamic loader an ELF program names (`PT_INTERP`), canonical;
/// `None` for a static program, a script or anything unreadable.
fn elf_interpreter(program: &Path) -> Option<PathBuf> {
    use std::io::{Read, Seek, SeekFrom};
    const PT_INTERP: u32 = 3;
    let mut file = std::fs::File::open(program).ok()?;
    let mut header = [0u8; 64];
    file.read_exact(&mut header).ok()?;
    if header[..4] != *b"\x7fELF" || header[5] != 1 {
        return None; // not ELF, or not little-endian
    }
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]) as u64;
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let wide = match header[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let (phoff, phentsize, phnum) = if wide {
        (
            u64_at(&header, 32),
            u16_at(&header, 54),
            u16_at(&header, 56),
        )
    } else {
        (
            u32_at(&header, 28) as u64,
            u16_at(&header, 42),
            u16_at(&header, 44),
        )
    };
    let needed = if wide { 56 } else { 32 };
    if phentsize < needed || phnum > 256 {
        return None;
    }
    let mut entry = vec![0u8; phentsize as usize];
    for index in 0..phnum {
        file.seek(SeekFrom::Start(phoff.checked_add(index * phentsize)?))
            .ok()?;
        file.read_exact(&mut entry).ok()?;
        if u32_at(&entry, 0) != PT_INTERP {
            continue;
        }
        let (offset, size) = if wide {
            (u64_at(&entry, 8), u64_at(&entry, 32))
        } else {
            (u32_at(&entry, 4) as u64, u32_at(&entry, 16) as u64)
        };
        if size == 0 || size > 4096 {
            return None;
        }
        let mut name = vec![0u8; size as usize];
        file.seek(SeekFrom::Start(offset)).ok()?;
        file.read_exact(&mut name).ok()?;
        let name = name.split(|b| *b == 0).next()?;
        use std::os::unix::ffi::OsStrExt;
        return std::fs::canonicalize(std::ffi::OsStr::from_bytes(name)).ok();
    }
    None
}

/// Build the Landlock ruleset in the host; the child only enforces it.
pub(super) fn build_ruleset(
    request: &Request,
    plan: &SandboxPlan,
    abi_version: i32,
    netns: bool,
) -> Result<OwnedFd, String> {
    let abi = ABI::from(abi_version);
    let fs = AccessFs::from_all(abi);
    // TCP: with a network grant, connect only to granted ports (any port
    // when a grant names none) and never listen; without one, the empty
    // network namespace already cuts everything, Landlock only steps in
    // when there is no namespace.
    let mut tcp: BitFlags<AccessNet> = BitFlags::EMPTY;
    let mut ports = Vec::new();
    if abi_version >= 4 {
        match &plan.network {
            NetworkAccess::None => {
                if !netns {
                    tcp = AccessNet::BindTcp | AccessNet::ConnectTcp;
                }
            }
            NetworkAccess::AnyPort => tcp = AccessNet::BindTcp.into(),
            NetworkAccess::Ports(granted) => {
                tcp = AccessNet::BindTcp | AccessNet::ConnectTcp;
                ports.clone_from(granted);
            }
        }
    }
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(fs)
        .map_err(|e| e.to_string())?;
    if !tcp.is_empty() {
        ruleset = ruleset.handle_access(tcp).map_err(|e| e.to_string())?;
    }
    if abi_version >= 6 {
        ruleset = ruleset
            .scope(Scope::AbstractUnixSocket | Scope::Signal)
            .map_err(|e| e.to_string())?;
    }
    let mut created = ruleset.create().map_err(|e| e.to_string())?;
    for (path, access) in fs_rules(request, plan, abi) {
        // A granted directory's rule is made on the handle opened when the
        // run started, not on its name, which may have been swapped since.
        let rule = match request.grants.handle(&path) {
            Some(handle) => created.add_rule(PathBeneath::new(handle.as_fd(), access)),
            None => {
                let fd = PathFd::new(&path)
                    .map_err(|e| format!("cannot open '{}': {e}", path.display()))?;
                created.add_rule(PathBeneath::new(fd, access))
            }
        };
        created = rule.map_err(|e| format!("rule for '{}': {e}", path.display()))?;
    }
    for port in ports {
        created = created
            .add_rule(NetPort::new(port, AccessNet::ConnectTcp))
            .map_err(|e| format!("rule for TCP port {port}: {e}"))?;
    }
    let fd: Option<OwnedFd> = created.into();
    fd.ok_or_else(|| "Landlock refused the ruleset".to_string())
}

// ---------------------------------------------------------------------------
// In the child, between fork and exec

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::sandbox::Request;
    use crate::step::grants::NetworkGrant;
    use crate::step::grants::ResolvedGrants;

    fn rules(grants: &ResolvedGrants, private: &Path) -> Vec<(PathBuf, BitFlags<AccessFs>)> {
        let request = Request {
            grants,
            program: Path::new("/bin/sh"),
            private_dir: private,
        };
        fs_rules(
            &request,
            &crate::step::grants::sandbox_plan(grants),
            ABI::V7,
        )
    }

    #[test]
    fn etc_stays_closed_but_for_the_loader_and_the_network_files() {
        let private = tempfile::tempdir().unwrap();
        let grants = ResolvedGrants::default();
        let closed = rules(&grants, private.path());
        assert!(closed.iter().all(|(path, _)| path != Path::new("/etc")));
        assert!(closed
            .iter()
            .all(|(path, _)| !path.starts_with("/etc/passwd") && !path.starts_with("/etc/ssl")));
        assert!(closed.iter().any(|(path, _)| path == Path::new("/usr")));
        let private_rule = closed
            .iter()
            .find(|(path, _)| path == private.path())
            .expect("the private directory is granted");
        assert!(private_rule
            .1
            .contains(AccessFs::WriteFile | AccessFs::MakeReg));

        let networked = ResolvedGrants {
            network: vec![NetworkGrant::parse("example.com:443").unwrap()],
            ..ResolvedGrants::default()
        };
        let open = rules(&networked, private.path());
        if Path::new("/etc/resolv.conf").exists() {
            let resolv = open
                .iter()
                .find(|(path, _)| path == Path::new("/etc/resolv.conf"))
                .expect("resolv.conf is readable with a network grant");
            assert_eq!(resolv.1, BitFlags::from(AccessFs::ReadFile));
        }
    }

    #[test]
    fn read_grants_are_read_only_and_files_get_file_rights_only() {
        let private = tempfile::tempdir().unwrap();
        let granted = tempfile::tempdir().unwrap();
        let grants = ResolvedGrants {
            files: vec![(granted.path().to_path_buf(), false)],
            ..ResolvedGrants::default()
        };
        let all = rules(&grants, private.path());
        let rule = all.iter().find(|(path, _)| path == granted.path()).unwrap();
        assert_eq!(rule.1, AccessFs::from_read(ABI::V7) & !AccessFs::Execute);
        let null = all
            .iter()
            .find(|(path, _)| path == Path::new("/dev/null"))
            .unwrap();
        assert!(null.1.contains(AccessFs::WriteFile | AccessFs::Truncate));
        assert!(!null.1.contains(AccessFs::ReadDir));
    }

    #[test]
    fn execute_is_granted_on_the_programs_and_their_loader_only() {
        let private = tempfile::tempdir().unwrap();
        let granted = tempfile::tempdir().unwrap();
        let cat = crate::step::grants::resolve_program("cat").unwrap();
        let grants = ResolvedGrants {
            files: vec![(granted.path().to_path_buf(), true)],
            exec: vec![crate::step::grants::ExecGrant {
                name: "cat".into(),
                path: cat.clone(),
            }],
            ..ResolvedGrants::default()
        };
        let all = rules(&grants, private.path());
        let executable: Vec<&PathBuf> = all
            .iter()
            .filter(|(_, access)| access.contains(AccessFs::Execute))
            .map(|(path, _)| path)
            .collect();
        let mut expected = vec![Path::new("/bin/sh").to_path_buf(), cat.clone()];
        expected.extend(elf_interpreter(&cat));
        expected.extend(elf_interpreter(Path::new("/bin/sh")));
        for path in &executable {
            assert!(expected.contains(path), "{path:?} is executable");
            assert!(!path.is_dir(), "a directory carries Execute: {path:?}");
        }
        assert!(executable.contains(&&cat));
        let usr = all
            .iter()
            .find(|(path, _)| path == Path::new("/usr"))
            .unwrap();
        assert!(usr.1.contains(AccessFs::ReadFile) && !usr.1.contains(AccessFs::Execute));
    }

    #[test]
    fn the_dynamic_loader_of_a_program_is_found() {
        let sh = crate::step::grants::resolve_program("sh").unwrap();
        if let Some(loader) = elf_interpreter(&sh) {
            assert!(loader.is_absolute() && loader.is_file(), "{loader:?}");
            assert!(loader.to_string_lossy().contains("ld"), "{loader:?}");
        }
        let script = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(script.path(), "#!/bin/sh -e\necho hi\n").unwrap();
        assert_eq!(elf_interpreter(script.path()), None);
        assert_eq!(script_interpreter(script.path()), Some(sh));
        assert_eq!(script_interpreter(Path::new("/nonexistent")), None);
        assert_eq!(elf_interpreter(Path::new("/nonexistent")), None);
    }
}
