//! Who may still connect when the database is full. PostgreSQL refuses a new
//! connection once `max_connections` minus the reserved slots are taken (SQLSTATE
//! 53300). `superuser_reserved_connections` (every major) keeps slots for superusers;
//! from PostgreSQL 16 on, `reserved_connections` keeps slots for roles with the
//! privileges of `pg_use_reserved_connections` as well
//! (<https://www.postgresql.org/docs/16/runtime-config-connection.html#GUC-RESERVED-CONNECTIONS>).
//! poolwarden keeps its one session for as long as the server does; but a new one —
//! after a controller restart, a leader change, a database restart — is refused when
//! a leak has filled the database, exactly when poolwarden is needed, unless its role
//! may use a reserved slot.

/// What the sampler's session learned about the reserved slots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReservedSlots {
    /// The sampler's role (`current_user`).
    pub role: String,
    /// `server_version_num`; 0 when not read (a snapshot made without a server).
    pub server_version_num: u32,
    /// `reserved_connections` (PostgreSQL 16+; 0 before).
    pub reserved_connections: u32,
    /// The role is a superuser: `superuser_reserved_connections` are its.
    pub superuser: bool,
    /// The role has the privileges of `pg_use_reserved_connections` (16+).
    pub may_use_reserved: bool,
}

impl ReservedSlots {
    /// The server's major version (16 for 160004), 0 when not read.
    pub fn major(&self) -> u32 {
        self.server_version_num / 10_000
    }

    /// Why a new session of this role would be refused once the database is full,
    /// with what to do about it; `None` when the role may use a reserved slot.
    pub fn warning(&self) -> Option<String> {
        let role = &self.role;
        if self.server_version_num == 0 || self.superuser {
            return None;
        }
        if self.major() < 16 {
            return Some(format!(
                "PostgreSQL {} reserves connection slots for superusers only: if the database fills up, \
                 a new session of role {role:?} (after a controller restart or a leader change) is refused \
                 and poolwarden cannot see or fix the leak; PostgreSQL 16+ has reserved_connections and \
                 pg_use_reserved_connections for this (see docs/operations.md)",
                self.major()
            ));
        }
        if !self.may_use_reserved {
            return Some(format!(
                "role {role:?} cannot use reserved connection slots: if the database fills up, a new session \
                 (after a controller restart or a leader change) is refused and poolwarden cannot see or fix \
                 the leak: GRANT pg_use_reserved_connections TO {role}; and set reserved_connections (e.g. 3)"
            ));
        }
        if self.reserved_connections == 0 {
            return Some(format!(
                "role {role:?} may use reserved connection slots but reserved_connections is 0: if the database \
                 fills up, a new session is refused: ALTER SYSTEM SET reserved_connections = 3; (takes effect \
                 on restart)"
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(version: u32, reserved: u32, superuser: bool, may: bool) -> ReservedSlots {
        ReservedSlots {
            role: "poolwarden".into(),
            server_version_num: version,
            reserved_connections: reserved,
            superuser,
            may_use_reserved: may,
        }
    }

    #[test]
    fn a_role_that_can_use_a_reserved_slot_is_not_warned_about() {
        assert_eq!(slots(160_004, 3, false, true).warning(), None);
        assert_eq!(
            slots(150_010, 0, true, false).warning(),
            None,
            "superusers have their own slots"
        );
        assert_eq!(slots(0, 0, false, false).warning(), None, "not read: nothing to say");
    }

    #[test]
    fn each_way_to_be_shut_out_says_what_to_do() {
        let before_16 = slots(150_010, 0, false, false).warning().unwrap();
        assert!(
            before_16.starts_with("PostgreSQL 15 reserves connection slots for superusers only"),
            "{before_16}"
        );
        let no_grant = slots(170_002, 3, false, false).warning().unwrap();
        assert!(
            no_grant.contains("GRANT pg_use_reserved_connections TO poolwarden;"),
            "{no_grant}"
        );
        let no_slots = slots(180_000, 0, false, true).warning().unwrap();
        assert!(
            no_slots.contains("ALTER SYSTEM SET reserved_connections = 3;"),
            "{no_slots}"
        );
    }
}
