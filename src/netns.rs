//! Named network namespaces, the way `ip netns` keeps them: a file under /run/netns
//! bind-mounted from a namespace's nsfs handle, so the namespace outlives every process
//! in it and `ip -n NAME` sees it too.
//!
//! Network namespace membership is per thread: entering one (`setns`) moves only the
//! calling thread, and a socket stays in the namespace it was created in. So work in a
//! namespace runs on a thread of its own ([`run_in`]), and a child process enters before
//! `exec` ([`spawn_in`]).

use anyhow::{anyhow, bail, Context, Result};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// Where named namespaces live (shared with iproute2).
pub const NETNS_DIR: &str = "/run/netns";

pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 200 || name.contains('/') || name.starts_with('.') {
        bail!("invalid network namespace name '{name}'");
    }
    Ok(())
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .with_context(|| format!("{} contains a NUL byte", p.display()))
}

fn os_err(what: String) -> anyhow::Error {
    anyhow::Error::new(io::Error::last_os_error()).context(what)
}

fn mount(src: &Path, target: &Path, flags: libc::c_ulong) -> io::Result<()> {
    let (src, target) = match (cstr(src), cstr(target)) {
        (Ok(s), Ok(t)) => (s, t),
        _ => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
    };
    let none = c"none";
    // SAFETY: every pointer is a valid NUL-terminated string for the duration of the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            none.as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes /run/netns a shared mount point, as iproute2 does, so that namespace mounts
/// made here propagate to other mount namespaces (and `ip netns` agrees with us).
fn prepare_dir() -> Result<()> {
    let dir = Path::new(NETNS_DIR);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {NETNS_DIR}"))?;
    if mount(Path::new(""), dir, libc::MS_SHARED | libc::MS_REC).is_ok() {
        return Ok(());
    }
    // Not a mount point yet: bind it onto itself, then make it shared.
    mount(dir, dir, libc::MS_BIND | libc::MS_REC)
        .with_context(|| format!("bind-mounting {NETNS_DIR} onto itself"))?;
    mount(Path::new(""), dir, libc::MS_SHARED | libc::MS_REC)
        .with_context(|| format!("making {NETNS_DIR} a shared mount"))
}

/// Creates the named namespace (fails if it exists). Like `ip netns add NAME`.
pub fn create(name: &str) -> Result<()> {
    check_name(name)?;
    prepare_dir()?;
    let target = path(name);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&target)
        .with_context(|| format!("creating {}", target.display()))?;
    // unshare on a throwaway thread so no long-lived thread ends up in the new namespace.
    let bound = std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            // SAFETY: plain syscall; affects only this thread's namespace membership.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(os_err("unshare(CLONE_NEWNET)".into()));
            }
            mount(
                Path::new("/proc/thread-self/ns/net"),
                &target,
                libc::MS_BIND,
            )
            .with_context(|| format!("bind-mounting the new namespace onto {}", target.display()))
        })
        .join()
        .unwrap_or_else(|_| Err(anyhow!("namespace thread panicked")))
    });
    if let Err(e) = bound {
        let _ = std::fs::remove_file(&target);
        return Err(e.context(format!("creating network namespace {name}")));
    }
    Ok(())
}

/// Deletes the named namespace; a missing one is not an error. Like `ip netns del NAME`.
/// The namespace itself goes once no process or socket holds it any more.
pub fn delete(name: &str) -> Result<()> {
    check_name(name)?;
    let target = path(name);
    let c = cstr(&target)?;
    // SAFETY: valid C string; MNT_DETACH never blocks on users of the mount.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        let e = io::Error::last_os_error();
        // EINVAL: not a mount point (a half-created namespace file); ENOENT: gone already.
        if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) {
            return Err(anyhow::Error::new(e).context(format!("unmounting {}", target.display())));
        }
    }
    match std::fs::remove_file(&target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("removing {}", target.display()))),
    }
}

pub fn exists(name: &str) -> bool {
    check_name(name).is_ok() && path(name).exists()
}

/// A handle on the named namespace, for [`enter`] or `setns_by_fd` on a link.
pub fn open(name: &str) -> Result<File> {
    check_name(name)?;
    File::open(path(name)).with_context(|| format!("opening network namespace {name}"))
}

/// Moves the calling thread into the namespace behind `ns`.
pub fn enter(ns: &File) -> io::Result<()> {
    // SAFETY: `ns` is an open nsfs file descriptor for the whole call.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Runs `f` on a fresh thread inside the named namespace and returns its result.
/// Sockets `f` creates stay in that namespace wherever they are used afterwards.
pub fn run_in<T: Send>(name: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let ns = open(name)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(&ns).with_context(|| format!("entering network namespace {name}"))?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(anyhow!("thread in network namespace {name} panicked")))
    })
}

/// Spawns `cmd` as a process inside the named namespace.
pub fn spawn_in(name: &str, cmd: &mut Command) -> Result<Child> {
    let ns = open(name)?;
    let fd = ns.as_raw_fd();
    // SAFETY: the closure only calls setns, which is async-signal-safe; `ns` stays open
    // until spawn returns (the descriptor is close-on-exec, so the child does not keep it).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
    let child = cmd.spawn().with_context(|| {
        format!(
            "starting {:?} in network namespace {name}",
            cmd.get_program()
        )
    })?;
    drop(ns);
    Ok(child)
}

/// A route-netlink handle whose socket lives in the named namespace; its connection
/// task runs on the current tokio runtime.
pub fn rtnetlink_in(name: &str) -> Result<rtnetlink::Handle> {
    let rt = tokio::runtime::Handle::try_current().context("rtnetlink_in needs a tokio runtime")?;
    let (conn, handle) = run_in(name, || {
        // The socket registers with the runtime's reactor as it is created.
        let _guard = rt.enter();
        let (conn, handle, _) =
            rtnetlink::new_connection().context("opening a route netlink socket")?;
        Ok((conn, handle))
    })?;
    rt.spawn(conn);
    Ok(handle)
}

/// Writes a sysctl (a `/`-separated key under /proc/sys) inside the named namespace.
pub fn sysctl_in(name: &str, key: &str, value: &str) -> Result<()> {
    if key.split('/').any(|p| p.is_empty() || p == "..") {
        bail!("invalid sysctl key {key}");
    }
    let file = Path::new("/proc/sys").join(key);
    // /proc/sys/net resolves against the opening thread's namespace.
    run_in(name, || {
        std::fs::write(&file, value).with_context(|| format!("setting {key} = {value} in {name}"))
    })
}

/// Names of the namespaces under /run/netns.
pub fn list() -> Result<Vec<String>> {
    let dir = match std::fs::read_dir(NETNS_DIR) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("listing {NETNS_DIR}"))),
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}
