//! What the host and the launcher say to each other: fixed-size frames over
//! a `SOCK_SEQPACKET` socket pair (one frame per message, never split or
//! merged), descriptors alongside (`SCM_RIGHTS`), and the program's command
//! line in a memfd so no frame has to carry it.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

/// Most descriptors one frame carries.
pub(in crate::runtime::sandbox) const MAX_FDS: usize = 8;
/// Size of every frame.
pub(in crate::runtime::sandbox) const FRAME: usize = 32;
/// Largest command line (program, directory, arguments, environment) the
/// launcher reads: well above the kernel's own `ARG_MAX` of 2 MiB.
pub(in crate::runtime::sandbox) const MAX_COMMAND_LINE: u64 = 8 << 20;

/// Host → launcher: here is the lifeline's read end (one descriptor).
pub(in crate::runtime::sandbox) const INIT: u8 = 1;
/// Host → launcher: start a program (descriptors: command line, stdin,
/// stdout, stderr, then the cgroup's and the ruleset's when flagged).
pub(in crate::runtime::sandbox) const SPAWN: u8 = 2;
/// Launcher → host: the program was exec'd; `pid` is its tree's leader.
pub(in crate::runtime::sandbox) const STARTED: u8 = 3;
/// Launcher → host: the set-up failed at `stage` with `errno`.
pub(in crate::runtime::sandbox) const FAILED: u8 = 4;
/// Launcher → host: the tree's leader ended with wait status `status`.
pub(in crate::runtime::sandbox) const EXITED: u8 = 5;

/// One spawn request, as it travels in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::runtime::sandbox) struct SpawnFrame {
    pub id: u64,
    pub unshare: i32,
    /// `RLIMIT_NPROC` to set; `u64::MAX` for none.
    pub nproc: u64,
    pub pid_init: bool,
    pub cgroup: bool,
    pub ruleset: bool,
    /// The program may join the launcher's shared empty network namespace
    /// instead of creating one.
    pub share_net: bool,
}

impl SpawnFrame {
    pub(in crate::runtime::sandbox) fn encode(&self) -> [u8; FRAME] {
        let mut frame = [0u8; FRAME];
        frame[0] = SPAWN;
        frame[1] = u8::from(self.pid_init);
        frame[2] = u8::from(self.cgroup);
        frame[3] = u8::from(self.ruleset);
        frame[4..8].copy_from_slice(&self.unshare.to_le_bytes());
        frame[8..16].copy_from_slice(&self.id.to_le_bytes());
        frame[16..24].copy_from_slice(&self.nproc.to_le_bytes());
        frame[24] = u8::from(self.share_net);
        frame
    }

    pub(in crate::runtime::sandbox) fn decode(frame: &[u8; FRAME]) -> SpawnFrame {
        SpawnFrame {
            pid_init: frame[1] != 0,
            cgroup: frame[2] != 0,
            ruleset: frame[3] != 0,
            unshare: i32::from_le_bytes(frame[4..8].try_into().unwrap_or_default()),
            id: u64::from_le_bytes(frame[8..16].try_into().unwrap_or_default()),
            nproc: u64::from_le_bytes(frame[16..24].try_into().unwrap_or_default()),
            share_net: frame[24] != 0,
        }
    }

    /// How many descriptors travel with this frame.
    pub(in crate::runtime::sandbox) fn fd_count(&self) -> usize {
        4 + usize::from(self.cgroup) + usize::from(self.ruleset)
    }
}

/// One reply of the launcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::runtime::sandbox) struct Reply {
    pub kind: u8,
    pub id: u64,
    pub pid: i32,
    /// The failing stage (FAILED) or the wait status (EXITED).
    pub value: i32,
    /// The errno of a failure.
    pub errno: i32,
}

impl Reply {
    pub(in crate::runtime::sandbox) fn encode(&self) -> [u8; FRAME] {
        let mut frame = [0u8; FRAME];
        frame[0] = self.kind;
        frame[4..8].copy_from_slice(&self.pid.to_le_bytes());
        frame[8..16].copy_from_slice(&self.id.to_le_bytes());
        frame[16..20].copy_from_slice(&self.value.to_le_bytes());
        frame[20..24].copy_from_slice(&self.errno.to_le_bytes());
        frame
    }

    pub(in crate::runtime::sandbox) fn decode(frame: &[u8; FRAME]) -> Reply {
        let int = |range: std::ops::Range<usize>| {
            i32::from_le_bytes(frame[range].try_into().unwrap_or_default())
        };
        Reply {
            kind: frame[0],
            pid: int(4..8),
            id: u64::from_le_bytes(frame[8..16].try_into().unwrap_or_default()),
            value: int(16..20),
            errno: int(20..24),
        }
    }
}

/// The program's command line: what `execve` gets, and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::runtime::sandbox) struct CommandLine {
    pub program: CString,
    pub cwd: CString,
    pub args: Vec<CString>,
    pub env: Vec<CString>,
}

impl CommandLine {
    /// `program`, `cwd`, `args` (argv[0] included) and `NAME=value`
    /// pairs; fails on a NUL byte, which no `execve` argument can hold.
    pub(in crate::runtime::sandbox) fn new<'a>(
        program: &OsStr,
        cwd: &OsStr,
        args: impl IntoIterator<Item = &'a OsStr>,
        env: impl IntoIterator<Item = (&'a OsStr, &'a OsStr)>,
    ) -> io::Result<CommandLine> {
        let c = |bytes: &[u8]| {
            CString::new(bytes).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "an argument, the program's path or an environment variable holds a NUL byte",
                )
            })
        };
        let env = env.into_iter().map(|(name, value)| {
            let mut pair = name.as_bytes().to_vec();
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            c(&pair)
        });
        Ok(CommandLine {
            program: c(program.as_bytes())?,
            cwd: c(cwd.as_bytes())?,
            args: args
                .into_iter()
                .map(|arg| c(arg.as_bytes()))
                .collect::<io::Result<_>>()?,
            env: env.collect::<io::Result<_>>()?,
        })
    }

    /// Counts, then each string as a length and its bytes.
    pub(in crate::runtime::sandbox) fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(self.args.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(self.env.len() as u32).to_le_bytes());
        let strings = [&self.program, &self.cwd]
            .into_iter()
            .chain(&self.args)
            .chain(&self.env);
        for string in strings {
            let string = string.as_bytes();
            bytes.extend_from_slice(&(string.len() as u32).to_le_bytes());
            bytes.extend_from_slice(string);
        }
        bytes
    }

    /// The inverse of [`CommandLine::encode`]; `None` on anything malformed.
    pub(in crate::runtime::sandbox) fn decode(bytes: &[u8]) -> Option<CommandLine> {
        let mut rest = bytes;
        let mut number = || -> Option<usize> {
            let (head, tail) = rest.split_first_chunk::<4>()?;
            rest = tail;
            Some(u32::from_le_bytes(*head) as usize)
        };
        let argc = number()?;
        let envc = number()?;
        let total = argc.checked_add(envc)?.checked_add(2)?;
        if total > bytes.len() / 4 {
            return None;
        }
        let mut strings = Vec::with_capacity(total);
        for _ in 0..total {
            let (head, tail) = rest.split_first_chunk::<4>()?;
            let len = u32::from_le_bytes(*head) as usize;
            if len > tail.len() {
                return None;
            }
            let (string, tail) = tail.split_at(len);
            strings.push(CString::new(string).ok()?);
            rest = tail;
        }
        if !rest.is_empty() {
            return None;
        }
        let mut strings = strings.into_iter();
        let program = strings.next()?;
        let cwd = strings.next()?;
        let args = strings.by_ref().take(argc).collect();
        let env = strings.collect();
        Some(CommandLine {
            program,
            cwd,
            args,
            env,
        })
    }

    /// The encoded command line in a new memfd.
    pub(in crate::runtime::sandbox) fn to_memfd(&self) -> io::Result<OwnedFd> {
        // SAFETY: memfd_create returns a new descriptor we own.
        let fd = unsafe { libc::memfd_create(c"wfhost-command".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just created.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let bytes = self.encode();
        let mut written = 0;
        while written < bytes.len() {
            // SAFETY: writes from a live buffer.
            let n = unsafe {
                libc::write(
                    fd.as_raw_fd(),
                    bytes[written..].as_ptr().cast(),
                    bytes.len() - written,
                )
            };
            if n < 0 {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
                continue;
            }
            written += n as usize;
        }
        Ok(fd)
    }

    /// Read a command line from a memfd, at most [`MAX_COMMAND_LINE`].
    pub(in crate::runtime::sandbox) fn from_fd(fd: RawFd) -> Option<CommandLine> {
        // SAFETY: fstat fills a local.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd, &mut stat) } < 0 {
            return None;
        }
        let size = u64::try_from(stat.st_size).ok()?;
        if size > MAX_COMMAND_LINE {
            return None;
        }
        let mut bytes = vec![0u8; size as usize];
        let mut got = 0;
        while got < bytes.len() {
            // SAFETY: reads into a live buffer.
            let n = unsafe {
                libc::pread(
                    fd,
                    bytes[got..].as_mut_ptr().cast(),
                    bytes.len() - got,
                    got as libc::off_t,
                )
            };
            if n <= 0 {
                return None;
            }
            got += n as usize;
        }
        CommandLine::decode(&bytes)
    }
}

/// Send one frame with `fds` alongside.
pub(in crate::runtime::sandbox) fn send(
    socket: RawFd,
    frame: &[u8; FRAME],
    fds: &[RawFd],
) -> io::Result<()> {
    assert!(fds.len() <= MAX_FDS);
    let mut iov = libc::iovec {
        iov_base: frame.as_ptr() as *mut libc::c_void,
        iov_len: frame.len(),
    };
    let mut control = ControlBuffer::new();
    // SAFETY: msghdr is plain data; every pointer in it refers to a live
    // local for the duration of the call.
    unsafe {
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        if !fds.is_empty() {
            let bytes = std::mem::size_of_val(fds) as u32;
            message.msg_control = control.bytes.as_mut_ptr().cast();
            message.msg_controllen = libc::CMSG_SPACE(bytes) as _;
            let header = libc::CMSG_FIRSTHDR(&message);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(bytes) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(header).cast::<RawFd>(),
                fds.len(),
            );
        }
        loop {
            if libc::sendmsg(socket, &message, libc::MSG_NOSIGNAL) >= 0 {
                return Ok(());
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }
}

/// Receive one frame and the descriptors that came with it (close-on-exec).
/// `Ok(None)` when the other side is gone.
pub(in crate::runtime::sandbox) fn recv(
    socket: RawFd,
) -> io::Result<Option<([u8; FRAME], Vec<OwnedFd>)>> {
    let mut frame = [0u8; FRAME];
    let mut iov = libc::iovec {
        iov_base: frame.as_mut_ptr().cast(),
        iov_len: frame.len(),
    };
    let mut control = ControlBuffer::new();
    // SAFETY: as in `send`; received descriptors are taken into OwnedFds
    // right away, so none leaks.
    unsafe {
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.bytes.as_mut_ptr().cast();
        message.msg_controllen = control.bytes.len() as _;
        let received = loop {
            let n = libc::recvmsg(socket, &mut message, libc::MSG_CMSG_CLOEXEC);
            if n >= 0 {
                break n as usize;
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        };
        let mut fds = Vec::new();
        let mut header = libc::CMSG_FIRSTHDR(&message);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(header);
                let len = (*header).cmsg_len as usize - (data as usize - header as usize);
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            header = libc::CMSG_NXTHDR(&message, header);
        }
        if received == 0 && fds.is_empty() {
            return Ok(None);
        }
        if message.msg_flags & (libc::MSG_CTRUNC | libc::MSG_TRUNC) != 0 || received != FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a malformed frame (truncated, or descriptors cut off)",
            ));
        }
        Ok(Some((frame, fds)))
    }
}

/// Room for [`MAX_FDS`] descriptors, aligned as `cmsghdr` needs.
#[repr(C, align(8))]
struct ControlBuffer {
    bytes: [u8; 128],
}

impl ControlBuffer {
    fn new() -> ControlBuffer {
        const _: () = assert!(std::mem::size_of::<RawFd>() * MAX_FDS + 64 <= 128);
        ControlBuffer { bytes: [0; 128] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_line_round_trips_and_garbage_is_refused() {
        let line = CommandLine::new(
            OsStr::new("/bin/sh"),
            OsStr::new("/tmp"),
            ["/bin/sh", "-c", "echo é"].map(OsStr::new),
            [
                (OsStr::new("A"), OsStr::new("1=2")),
                (OsStr::new("B"), OsStr::new("")),
            ],
        )
        .unwrap();
        let bytes = line.encode();
        assert_eq!(CommandLine::decode(&bytes), Some(line.clone()));
        assert_eq!(line.env[0].as_bytes(), b"A=1=2");
        for cut in [0, 3, 8, bytes.len() - 1] {
            assert_eq!(CommandLine::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut huge = bytes.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(CommandLine::decode(&huge), None);
        let nul = CommandLine::new(
            OsStr::new("/bin/sh"),
            OsStr::new("/"),
            [OsStr::new("a\0b")],
            [],
        );
        assert!(nul.unwrap_err().to_string().contains("NUL byte"));
    }

    #[test]
    fn frames_round_trip() {
        let spawn = SpawnFrame {
            id: 7,
            unshare: libc::CLONE_NEWUSER | libc::CLONE_NEWPID,
            nproc: u64::MAX,
            pid_init: true,
            cgroup: false,
            ruleset: true,
            share_net: true,
        };
        assert_eq!(SpawnFrame::decode(&spawn.encode()), spawn);
        assert_eq!(spawn.fd_count(), 5);
        let reply = Reply {
            kind: EXITED,
            id: u64::MAX,
            pid: 1234,
            value: 9,
            errno: -1,
        };
        assert_eq!(Reply::decode(&reply.encode()), reply);
    }
}
