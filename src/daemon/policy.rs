//! Who may do what: the peer's identity, and one [`Policy`] that decides
//! each [`Right`] a request needs (the router names it).
//!
//! The daemon learns a local peer from the socket (SO_PEERCRED); a remote
//! transport names a certificate subject instead. Reading (status, locks
//! view, events, explain) is open to every peer that can connect. Changing
//! anything (tells, entry control, cltab edits, reread) and shutting down
//! are allowed to root, to the daemon's own user and to those named in a
//! UserList file, like OpenAFS BOS's UserList. Locks and records are open
//! to every peer by default; the settings `lock_access` and
//! `record_access` (`userlist`) give them only to those who may change
//! things.
//!
//! UserList format: one entry per line; surrounding whitespace is trimmed;
//! blank lines and lines starting with `#` are ignored; a line of digits only
//! is a numeric uid, a line `cert:NAME` a certificate identity, any other
//! line a user name (matched against the passwd name of the peer's uid). The
//! file is read at every check, so an edit applies to the next request.

use crate::cltab::Access;
use nix::unistd::{Uid, User};
use std::path::{Path, PathBuf};

/// A process on this machine at the other end of a connection, as
/// SO_PEERCRED reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalUser {
    /// Effective uid of the connecting process.
    pub uid: u32,
    /// Effective gid of the connecting process.
    pub gid: u32,
    /// Pid of the connecting process, when the platform reports it.
    pub pid: Option<i32>,
}

/// Who is at the other end of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    Local(LocalUser),
    /// A client that presented a certificate; its subject name.
    Certificate {
        subject: String,
    },
}

impl Peer {
    /// Who this is for per-peer limits: the uid of a local user (whatever
    /// process), a certificate's subject.
    pub fn key(&self) -> String {
        match self {
            Peer::Local(u) => format!("uid {}", u.uid),
            Peer::Certificate { subject } => format!("cert {subject}"),
        }
    }
}

/// What a request needs the right to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Right {
    /// Look: status, the locks view, events, explain, ping.
    Read,
    /// Change groups, entries or the cltab.
    Change,
    /// Stop the daemon.
    Shutdown,
    /// Take and release locks, hold leases.
    Lock,
    /// Add, read, change and delete records.
    Record,
}

impl Right {
    /// The right in the words of a refusal ("may not ...").
    fn words(self) -> &'static str {
        match self {
            Right::Read => "read the daemon's state",
            Right::Change => "change anything",
            Right::Shutdown => "shut the daemon down",
            Right::Lock => "take locks",
            Right::Record => "use records",
        }
    }
}

impl Peer {
    /// "alice (uid 1000)", "uid 1234" when the uid has no passwd entry, or
    /// "certificate alice".
    pub fn describe(&self) -> String {
        match self {
            Peer::Local(u) => u.describe_as(u.name().as_deref()),
            Peer::Certificate { subject } => format!("certificate {subject}"),
        }
    }

    /// The local user, if this is one.
    pub fn local(&self) -> Option<&LocalUser> {
        match self {
            Peer::Local(u) => Some(u),
            Peer::Certificate { .. } => None,
        }
    }
}

impl LocalUser {
    /// [`Peer::describe`] with the passwd name already looked up.
    fn describe_as(&self, name: Option<&str>) -> String {
        match name {
            Some(name) => format!("{name} ({})", self.uid_str()),
            None => self.uid_str(),
        }
    }

    /// The passwd name of the uid, if it has one (a failed lookup counts as
    /// none).
    fn name(&self) -> Option<String> {
        User::from_uid(Uid::from_raw(self.uid))
            .ok()
            .flatten()
            .map(|u| u.name)
    }

    fn uid_str(&self) -> String {
        format!("uid {}", self.uid)
    }
}

/// Who may do what in this daemon.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Allow every peer everything (BOS's `-noauth`).
    pub noauth: bool,
    /// The uid the daemon runs as; always allowed.
    pub daemon_uid: u32,
    /// The UserList file; None allows only root and the daemon's user.
    pub userlist: Option<PathBuf>,
    /// Who may take locks (`lock_access`).
    pub lock_access: Access,
    /// Who may use records (`record_access`).
    pub record_access: Access,
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// The user may not change anything. The message names the user, the uid
    /// and why, e.g. "user nobody (uid 65534) may not change anything: only
    /// root, the daemon's user (uid 0) and users listed in
    /// /etc/clinit/UserList may".
    #[error("user {who} may not change anything: {why}")]
    Denied {
        /// The user as [`Peer::describe`] gives it (it includes the uid).
        who: String,
        /// The uid of the user.
        uid: u32,
        /// Who may, and, when the UserList could not be used, why not.
        why: String,
    },
    /// Any other refusal: the peer, the right it lacks, and why.
    #[error("{who} may not {}: {why}", right.words())]
    Refused {
        who: String,
        right: Right,
        why: String,
    },
}

impl AccessError {
    /// Who may, and why the peer may not.
    pub fn why(&self) -> &str {
        match self {
            AccessError::Denied { why, .. } | AccessError::Refused { why, .. } => why,
        }
    }
}

impl Policy {
    /// Whether `peer` has `right`: `Ok(Some(who))` with the peer's
    /// description for the rights whose use is logged (changes and
    /// shutdown), `Ok(None)` for the others, or why not.
    pub fn check(&self, peer: &Peer, right: Right) -> Result<Option<String>, AccessError> {
        let (access, setting) = match right {
            Right::Read => return Ok(None),
            // A shutdown is refused in the words of any other change.
            Right::Change | Right::Shutdown => return self.check_change(peer).map(Some),
            Right::Lock => (self.lock_access, "lock_access"),
            Right::Record => (self.record_access, "record_access"),
        };
        match access {
            Access::Anyone => Ok(None),
            Access::Userlist => match self.check_change(peer) {
                Ok(_) => Ok(None),
                Err(e) => Err(AccessError::Refused {
                    who: peer.describe(),
                    right,
                    why: format!("{setting} is userlist: {}", e.why()),
                }),
            },
        }
    }

    /// Whether `peer` may make a request that changes anything: Ok with the
    /// description of the peer, for the log, or the reason it may not.
    ///
    /// The UserList is read at every check, so edits apply at once. An
    /// unreadable UserList denies everybody but root and the daemon's user,
    /// and the error names its path and the io error.
    pub fn check_change(&self, peer: &Peer) -> Result<String, AccessError> {
        let (user, name) = match peer {
            Peer::Local(u) => (Some(u), u.name()),
            Peer::Certificate { .. } => (None, None),
        };
        let who = match user {
            Some(u) => u.describe_as(name.as_deref()),
            None => peer.describe(),
        };
        if self.noauth || user.is_some_and(|u| u.uid == 0 || u.uid == self.daemon_uid) {
            return Ok(who);
        }
        let deny = |why: String| match user {
            Some(u) => Err(AccessError::Denied {
                who: who.clone(),
                uid: u.uid,
                why,
            }),
            None => Err(AccessError::Refused {
                who: who.clone(),
                right: Right::Change,
                why,
            }),
        };
        let only = format!("only root and the daemon's user (uid {})", self.daemon_uid);
        let Some(path) = &self.userlist else {
            return deny(format!("{only} may (no UserList is set)"));
        };
        let users = match read_userlist(path) {
            Ok(users) => users,
            Err(e) => {
                return deny(format!(
                    "{only} may, because the UserList {} cannot be read: {e}",
                    path.display()
                ));
            }
        };
        let listed = users.iter().any(|u| match (user, peer) {
            (_, Peer::Certificate { subject }) => u.strip_prefix("cert:") == Some(subject.as_str()),
            (Some(local), _) if u.bytes().all(|b| b.is_ascii_digit()) => {
                u.parse::<u32>().is_ok_and(|uid| uid == local.uid)
            }
            (Some(_), _) => !u.starts_with("cert:") && name.as_deref() == Some(u.as_str()),
            (None, _) => false,
        });
        if listed {
            Ok(who)
        } else {
            deny(format!(
                "only root, the daemon's user (uid {}) and users listed in {} may",
                self.daemon_uid,
                path.display()
            ))
        }
    }
}

/// Read a UserList: the user names, numeric uids and `cert:` identities it
/// lists, in file order, trimmed, without blank lines and `#` comment lines.
pub fn read_userlist(path: &Path) -> std::io::Result<Vec<String>> {
    Ok(parse_userlist(&std::fs::read_to_string(path)?))
}

/// The entries of a UserList's text (see [`read_userlist`]).
pub fn parse_userlist(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A uid with no passwd entry on any sane test machine.
    const NO_PASSWD: u32 = 4_000_123;

    fn nobody() -> (String, u32) {
        let u = User::from_name("nobody")
            .expect("passwd lookup")
            .expect("this machine has a user nobody");
        (u.name, u.uid.as_raw())
    }

    fn peer(uid: u32) -> Peer {
        Peer::Local(LocalUser {
            uid,
            gid: uid,
            pid: Some(1234),
        })
    }

    fn userlist(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f.flush().unwrap();
        f
    }

    #[test]
    fn describe_names_the_user_and_the_uid() {
        let (name, uid) = nobody();
        assert_eq!(peer(uid).describe(), format!("{name} (uid {uid})"));
        assert_eq!(peer(0).describe(), "root (uid 0)");
        assert_eq!(peer(NO_PASSWD).describe(), format!("uid {NO_PASSWD}"));
    }

    #[test]
    fn check_change_cases() {
        let (nobody_name, nobody_uid) = nobody();
        // (name, noauth, daemon uid, UserList text (None: no UserList),
        //  peer uid, Ok or the pieces the error message must contain)
        type Case<'a> = (
            &'a str,
            bool,
            u32,
            Option<String>,
            u32,
            Result<(), Vec<String>>,
        );
        let listed = |s: &str| Some(s.to_string());
        let cases: Vec<Case> = vec![
            ("root allowed", false, NO_PASSWD, listed(""), 0, Ok(())),
            (
                "root allowed without UserList",
                false,
                NO_PASSWD,
                None,
                0,
                Ok(()),
            ),
            (
                "daemon uid allowed",
                false,
                NO_PASSWD,
                listed(""),
                NO_PASSWD,
                Ok(()),
            ),
            (
                "daemon uid allowed without UserList",
                false,
                nobody_uid,
                None,
                nobody_uid,
                Ok(()),
            ),
            (
                "listed by name",
                false,
                0,
                listed(&format!("{nobody_name}\n")),
                nobody_uid,
                Ok(()),
            ),
            (
                "listed by uid",
                false,
                0,
                listed(&format!("{NO_PASSWD}\n")),
                NO_PASSWD,
                Ok(()),
            ),
            (
                "listed by uid, user with a passwd entry",
                false,
                0,
                listed(&format!("{nobody_uid}\n")),
                nobody_uid,
                Ok(()),
            ),
            (
                "whitespace trimmed, CRLF, no trailing newline",
                false,
                0,
                listed(&format!("alice\r\n  \t{nobody_name}  \r\n{NO_PASSWD}")),
                nobody_uid,
                Ok(()),
            ),
            (
                "unlisted denied",
                false,
                0,
                listed(&format!("alice\n{NO_PASSWD}\n")),
                nobody_uid,
                Err(vec![
                    format!("user {nobody_name} (uid {nobody_uid}) may not change anything"),
                    "only root, the daemon's user (uid 0) and users listed in".into(),
                ]),
            ),
            (
                "unlisted uid without passwd entry denied",
                false,
                0,
                listed(&format!("{nobody_name}\n")),
                NO_PASSWD,
                Err(vec![format!(
                    "user uid {NO_PASSWD} may not change anything"
                )]),
            ),
            (
                "comment and blank lines ignored",
                false,
                0,
                listed(&format!("# {nobody_name}\n\n   \n  #{NO_PASSWD}\n#\n")),
                nobody_uid,
                Err(vec![format!("uid {nobody_uid}")]),
            ),
            (
                "comment lines ignored, uid in a comment",
                false,
                0,
                listed(&format!("# {NO_PASSWD}\n")),
                NO_PASSWD,
                Err(vec![format!("uid {NO_PASSWD}")]),
            ),
            (
                "a name is not a prefix match",
                false,
                0,
                listed(&format!("{nobody_name}x\n{}\n", &nobody_name[1..])),
                nobody_uid,
                Err(vec![format!("uid {nobody_uid}")]),
            ),
            (
                "a uid too large for u32 matches nobody",
                false,
                0,
                listed("99999999999999999999\n"),
                NO_PASSWD,
                Err(vec![format!("uid {NO_PASSWD}")]),
            ),
            ("noauth allows all", true, 0, None, nobody_uid, Ok(())),
            (
                "noauth allows without passwd entry",
                true,
                0,
                None,
                NO_PASSWD,
                Ok(()),
            ),
            (
                "no UserList set",
                false,
                0,
                None,
                nobody_uid,
                Err(vec![
                    format!("user {nobody_name} (uid {nobody_uid}) may not change anything"),
                    "only root and the daemon's user (uid 0) may (no UserList is set)".into(),
                ]),
            ),
        ];
        for (name, noauth, daemon_uid, text, uid, want) in cases {
            let file = text.as_deref().map(userlist);
            let policy = Policy {
                noauth,
                daemon_uid,
                userlist: file.as_ref().map(|f| f.path().to_path_buf()),
                ..Policy::default()
            };
            let p = peer(uid);
            match (policy.check_change(&p), want) {
                (Ok(who), Ok(())) => assert_eq!(who, p.describe(), "case: {name}"),
                (Err(e), Err(pieces)) => {
                    let AccessError::Denied {
                        who, uid: got_uid, ..
                    } = &e
                    else {
                        panic!("case {name}: {e:?}");
                    };
                    assert_eq!(who, &p.describe(), "case: {name}");
                    assert_eq!(*got_uid, uid, "case: {name}");
                    let msg = e.to_string();
                    for piece in pieces {
                        assert!(msg.contains(&piece), "case {name}: {msg:?} lacks {piece:?}");
                    }
                    if let Some(f) = &file {
                        let path = f.path().display().to_string();
                        assert!(msg.contains(&path), "case {name}: {msg:?} lacks the path");
                    }
                }
                (got, want) => panic!("case {name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn the_userlist_is_read_at_every_check() {
        let (_, nobody_uid) = nobody();
        let file = userlist("alice\n");
        let policy = Policy {
            noauth: false,
            daemon_uid: 0,
            userlist: Some(file.path().to_path_buf()),
            ..Policy::default()
        };
        assert!(policy.check_change(&peer(nobody_uid)).is_err());
        std::fs::write(file.path(), format!("alice\n{nobody_uid}\n")).unwrap();
        assert!(policy.check_change(&peer(nobody_uid)).is_ok());
        std::fs::write(file.path(), "alice\n").unwrap();
        assert!(policy.check_change(&peer(nobody_uid)).is_err());
    }

    #[test]
    fn a_missing_userlist_denies_all_but_root_and_the_daemon_user() {
        let (nobody_name, nobody_uid) = nobody();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("UserList");
        let policy = Policy {
            noauth: false,
            daemon_uid: NO_PASSWD,
            userlist: Some(path.clone()),
            ..Policy::default()
        };
        let err = policy.check_change(&peer(nobody_uid)).unwrap_err();
        let os = std::fs::read(&path).unwrap_err();
        assert_eq!(os.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(
            err.to_string(),
            format!(
                "user {nobody_name} (uid {nobody_uid}) may not change anything: only root and \
                 the daemon's user (uid {NO_PASSWD}) may, because the UserList {} cannot be \
                 read: {os}",
                path.display()
            )
        );
        assert_eq!(
            policy.check_change(&peer(0)),
            Ok("root (uid 0)".to_string())
        );
        assert_eq!(
            policy.check_change(&peer(NO_PASSWD)),
            Ok(format!("uid {NO_PASSWD}"))
        );
    }

    #[test]
    fn an_unreadable_userlist_is_denied_like_a_missing_one() {
        // A directory cannot be read as a file, even by root.
        let (_, nobody_uid) = nobody();
        let dir = tempfile::tempdir().unwrap();
        let policy = Policy {
            noauth: false,
            daemon_uid: 0,
            userlist: Some(dir.path().to_path_buf()),
            ..Policy::default()
        };
        let msg = policy
            .check_change(&peer(nobody_uid))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(&format!(
                "the UserList {} cannot be read",
                dir.path().display()
            )),
            "{msg}"
        );
    }

    #[test]
    fn read_userlist_keeps_names_and_uids_in_order() {
        let f = userlist("# admins\n  alice \n\n\tbob\r\n#carol\n1000\n  # x\n");
        assert_eq!(
            read_userlist(f.path()).unwrap(),
            vec!["alice", "bob", "1000"]
        );
    }
}
