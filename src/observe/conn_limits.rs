//! The per-database and per-role connection limits a sample reads beside
//! `pg_stat_activity`, for the database budget (`decide::budget`).
//!
//! `pg_database.datconnlimit` and `pg_roles.rolconnlimit` are readable by every role
//! (no grant needed). -1 means no limit, so only the limits that are set are read
//! (<https://www.postgresql.org/docs/current/catalog-pg-database.html>,
//! <https://www.postgresql.org/docs/current/view-pg-roles.html>). Only normal
//! connections count (<https://www.postgresql.org/docs/current/sql-createrole.html>);
//! a database's limit "is not enforced against superusers or background worker
//! processes" (<https://www.postgresql.org/docs/current/sql-createdatabase.html>), and
//! `InitPostgres` (src/backend/utils/init/postinit.c) checks a role's only for a
//! role that is not a superuser, so superuser roles are left out; a role that cannot
//! log in opens no connections.
//! `datconnlimit` -2 marks a database a DROP DATABASE left invalid (PostgreSQL 15+):
//! nobody can connect to it, and it is left out too.

pub use crate::observation::ConnLimits;

/// The statement: `(is_role, name, limit)` per limit that is set.
pub const CONN_LIMITS_QUERY: &str = "
SELECT false, datname::text, datconnlimit FROM pg_database WHERE datconnlimit >= 0
UNION ALL
SELECT true, rolname::text, rolconnlimit FROM pg_roles
 WHERE rolconnlimit >= 0 AND rolcanlogin AND NOT rolsuper";

/// The limits from the statement's rows.
pub fn from_rows(rows: impl IntoIterator<Item = (bool, String, i32)>) -> ConnLimits {
    let mut limits = ConnLimits::default();
    for (is_role, name, limit) in rows {
        // The statement keeps limits >= 0; a negative one (no limit) is not a limit.
        let Ok(limit) = u32::try_from(limit) else { continue };
        if is_role {
            limits.roles.insert(name, limit);
        } else {
            limits.databases.insert(name, limit);
        }
    }
    limits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_limit_is_never_read_as_a_limit_of_zero() {
        let limits = from_rows([
            (false, "app".to_owned(), 40),
            (true, "web".to_owned(), 25),
            (true, "odd".to_owned(), -1),
            (true, "locked".to_owned(), 0),
        ]);
        assert_eq!(limits.databases.get("app"), Some(&40));
        assert_eq!(limits.roles.get("web"), Some(&25));
        assert_eq!(limits.roles.get("odd"), None, "-1 is no limit");
        assert_eq!(limits.roles.get("locked"), Some(&0), "0 is a limit: no connection");
    }
}
