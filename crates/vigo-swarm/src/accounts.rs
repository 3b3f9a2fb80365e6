//! Whose files these are: local accounts, resolved from this host's own account
//! database.
//!
//! A user name in an order means nothing until this host resolves it: uid, gid
//! and home come from here, never from the peer or the server. Resolution is a
//! trait so tests run against a passwd file of their own.

use std::path::{Path, PathBuf};

/// One local account, as far as the swarm needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl From<vigo_executors::accounts::User> for Account {
    fn from(user: vigo_executors::accounts::User) -> Self {
        Self { name: user.name, uid: user.uid, gid: user.gid, home: user.home }
    }
}

/// Why the account database could not answer.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error(transparent)]
    File(#[from] vigo_executors::accounts::AccountsError),
    #[error("looking up user {user}: {errno}")]
    System { user: String, errno: nix::errno::Errno },
}

/// Resolves user names to local accounts.
pub trait Accounts: Send + Sync {
    /// The account named exactly `name`; `None` when this host has no such user.
    fn lookup(&self, name: &str) -> Result<Option<Account>, AccountsError>;
}

/// Accounts from a passwd-format file (`/etc/passwd` on a host, a fixture in tests).
/// Names only: a numeric "name" never matches a uid.
#[derive(Debug, Clone)]
pub struct PasswdFile {
    path: PathBuf,
}

impl PasswdFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The host's `/etc/passwd`.
    pub fn system() -> Self {
        Self::new(vigo_executors::accounts::PASSWD)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every account in the file, in file order.
    pub fn all(&self) -> Result<Vec<Account>, AccountsError> {
        Ok(vigo_executors::accounts::users_in(&self.path)?.into_iter().map(Account::from).collect())
    }
}

impl Accounts for PasswdFile {
    fn lookup(&self, name: &str) -> Result<Option<Account>, AccountsError> {
        let users = vigo_executors::accounts::users_in(&self.path)?;
        Ok(users.into_iter().find(|u| u.name == name).map(Account::from))
    }
}

/// Accounts through the C library (`getpwnam_r`), so NSS sources such as LDAP count too.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemAccounts;

impl Accounts for SystemAccounts {
    fn lookup(&self, name: &str) -> Result<Option<Account>, AccountsError> {
        // A name with NUL cannot be passed to the C library, and no account has one.
        if name.contains('\0') {
            return Ok(None);
        }
        let user = nix::unistd::User::from_name(name)
            .map_err(|errno| AccountsError::System { user: name.to_string(), errno })?;
        Ok(user.map(|u| Account { name: u.name, uid: u.uid.as_raw(), gid: u.gid.as_raw(), home: u.dir }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lookup_is_by_exact_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("passwd");
        std::fs::write(&path, "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n")
            .expect("passwd");
        let accounts = PasswdFile::new(&path);
        let alice = accounts.lookup("alice").expect("lookup").expect("alice");
        assert_eq!((alice.uid, alice.gid, alice.home.as_path()), (1000, 1000, Path::new("/home/alice")));
        assert_eq!(accounts.lookup("1000").expect("lookup"), None, "a uid is not a name");
        assert_eq!(accounts.lookup("bob").expect("lookup"), None);
        assert_eq!(accounts.all().expect("all").len(), 2);
        assert!(PasswdFile::new(dir.path().join("absent")).lookup("alice").is_err());
    }

    #[test]
    fn system_lookup_finds_root() {
        let root = SystemAccounts.lookup("root").expect("lookup").expect("root exists");
        assert_eq!(root.uid, 0);
        assert_eq!(SystemAccounts.lookup("no\0such").expect("lookup"), None);
    }
}
