//! The Landlock ruleset of one program: what it may read, write and
//! execute, and which TCP ports it may connect to. Built in the host; the
//! child only enforces it.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreatedAttr, Scope, ABI,
};

use super::handles::{self, FileId};
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

/// One Landlock rule on files: a path, what it allows, and which file the
/// path named when the rules were drawn up.
struct FsRule {
    path: PathBuf,
    access: BitFlags<AccessFs>,
    file: FileId,
}

/// The Landlock rules of one program.
fn fs_rules(request: &Request, plan: &SandboxPlan, abi: ABI) -> Vec<FsRule> {
    // Execute is granted on the programs alone: no directory rule carries
    // it, so nothing copied into a writable directory can be run either.
    let no_exec = !BitFlags::from(AccessFs::Execute);
    let executable = AccessFs::from_read(abi) & AccessFs::from_file(abi);
    let read_dir = AccessFs::from_read(abi) & no_exec;
    let read_file = executable & no_exec;
    let read_only = AccessFs::ReadFile | AccessFs::ReadDir;
    let write_file = AccessFs::from_file(abi) & no_exec;
    let all = AccessFs::from_all(abi) & no_exec;
    let mut rules: Vec<FsRule> = Vec::new();
    // A rule for `path` if it names something; returns what it named.
    let mut add = |path: &Path, dir: BitFlags<AccessFs>, file: BitFlags<AccessFs>| {
        let meta = std::fs::metadata(path).ok()?;
        rules.push(FsRule {
            path: path.to_path_buf(),
            access: if meta.is_dir() { dir } else { file },
            file: FileId::of(&meta),
        });
        Some(meta)
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
            PathAccess::Read => {
                add(path, read_dir, read_file);
            }
            PathAccess::ReadWrite => {
                add(path, all, write_file);
            }
            PathAccess::Execute => {
                if let Some(meta) = add(path, read_dir, executable) {
                    for file in companions(path, &meta) {
                        add(&file, read_dir, executable);
                    }
                }
            }
        }
    }
    add(request.private_dir, all, write_file);
    rules
}

/// What the kernel executes along with `program`: the dynamic loader it
/// names, its `#!` interpreter and that one's loader (canonical paths).
/// Remembered per file, as long as the path names the same unchanged file
/// (a step's program is looked at again for every program it starts).
fn companions(program: &Path, meta: &std::fs::Metadata) -> Vec<PathBuf> {
    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt;
    use std::sync::Mutex;
    /// Device, inode, size, modification and change times.
    type Stamp = (u64, u64, u64, i64, i64, i64, i64);
    type Known = HashMap<PathBuf, (Stamp, Vec<PathBuf>)>;
    static KNOWN: Mutex<Option<Known>> = Mutex::new(None);
    const MAX_KNOWN: usize = 256;

    let stamp = (
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    );
    let lock = || KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((known, files)) = lock().as_ref().and_then(|known| known.get(program)) {
        if *known == stamp {
            return files.clone();
        }
    }
    let interpreter = script_interpreter(program);
    let mut files = Vec::new();
    for file in std::iter::once(program).chain(interpreter.as_deref()) {
        if file != program {
            files.push(file.to_path_buf());
        }
        files.extend(elf_interpreter(file));
    }
    let mut known = lock();
    let known = known.get_or_insert_with(HashMap::new);
    if known.len() >= MAX_KNOWN {
        known.clear();
    }
    known.insert(program.to_path_buf(), (stamp, files.clone()));
    files
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
    for FsRule { path, access, file } in fs_rules(request, plan, abi) {
        // A granted directory's rule is made on the handle opened when the
        // run started, not on its name, which may have been swapped since;
        // the private directory's on a handle opened now (it is new); the
        // rest on handles kept while their names name the same files.
        let rule = match request.grants.handle(&path) {
            Some(handle) => created.add_rule(PathBeneath::new(handle.as_fd(), access)),
            None if path == request.private_dir => {
                let fd = PathFd::new(&path)
                    .map_err(|e| format!("cannot open '{}': {e}", path.display()))?;
                created.add_rule(PathBeneath::new(fd, access))
            }
            None => {
                let handle = handles::handle(&path, file)
                    .map_err(|e| format!("cannot open '{}': {e}", path.display()))?;
                created.add_rule(PathBeneath::new(handle.as_fd(), access))
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
        .into_iter()
        .map(|rule| (rule.path, rule.access))
        .collect()
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
