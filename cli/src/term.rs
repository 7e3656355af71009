//! The terminal, for `watch`: its size, and single keys without Enter.
//!
//! Done with termios and `TIOCGWINSZ` through `nix` (already a dependency) rather than a
//! terminal crate: `watch` needs three things — the size, keys without echo or Enter, and
//! the terminal restored afterwards — which are a few lines each.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{self, LocalFlags, SetArg, SpecialCharacterIndices, Termios};

nix::ioctl_read_bad!(window_size, nix::libc::TIOCGWINSZ, nix::libc::winsize);

/// Columns and rows of the terminal on `fd` (`None`: not a terminal, or it says 0×0).
pub fn size(fd: BorrowedFd<'_>) -> Option<(usize, usize)> {
    let mut ws = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which points to a live,
    // writable `winsize`; the descriptor is borrowed, so it is open for the call.
    unsafe { window_size(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut ws) }.ok()?;
    (ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col as usize, ws.ws_row as usize))
}

/// Standard input in "cbreak" mode while alive: keys arrive one by one, unechoed; Ctrl-C
/// still raises SIGINT (ISIG stays on), and output processing is untouched. Dropping it
/// restores the settings it found.
pub struct Keys {
    saved: Termios,
}

impl Keys {
    /// Switch standard input to cbreak mode; `None` when it is not a terminal.
    pub fn new() -> Option<Keys> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        raw.local_flags
            .remove(LocalFlags::ICANON | LocalFlags::ECHO);
        raw.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
        raw.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(Keys { saved })
    }

    /// Wait up to `timeout` for a key; `true` when it was a quit key (`q`, `Q`).
    /// Returns early, `false`, when a signal interrupts the wait.
    pub fn wait_for_quit(&self, timeout: Duration) -> bool {
        let stdin = std::io::stdin();
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let ready = poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        );
        if !matches!(ready, Ok(n) if n > 0) {
            return false;
        }
        let mut buf = [0u8; 64];
        match nix::unistd::read(stdin.as_fd(), &mut buf) {
            Ok(n) if n > 0 => buf[..n].iter().any(|b| matches!(b, b'q' | b'Q')),
            // The terminal hung up (SIGHUP follows): wait instead of spinning on it.
            _ => {
                std::thread::sleep(timeout);
                false
            }
        }
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}
