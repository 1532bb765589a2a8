//! Route policy: who may send to whom.
//!
//! Between clients everything is denied unless a rule allows it. A rule names an account or a
//! group on each side. A rule matches a (sender, target) pair when its `from` is the sender or
//! a group the sender belongs to, and its `to` is the target or, for an account target, a
//! group the target belongs to. A matching deny beats any matching allow.

use crate::model::{Group, Route, RouteEffect};
use crate::names::AccountName;

/// The decision for one (sender, target) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// A rule allows it and none denies it.
    Allowed,
    /// No rule allows it (the default).
    NoRule,
    /// A rule denies it.
    Denied,
}

/// Evaluates the route rules for `sender` sending to `target` (an account or a group).
pub(crate) fn decide(
    routes: &[Route],
    groups: &[Group],
    sender: &AccountName,
    target: &AccountName,
) -> Decision {
    let member_of = |account: &AccountName, name: &AccountName| {
        groups
            .iter()
            .any(|g| &g.name == name && g.members.contains(account))
    };
    let from_matches = |from: &AccountName| from == sender || member_of(sender, from);
    let to_matches = |to: &AccountName| to == target || member_of(target, to);

    let mut allowed = false;
    for route in routes
        .iter()
        .filter(|r| from_matches(&r.from) && to_matches(&r.to))
    {
        match route.effect {
            RouteEffect::Deny => return Decision::Denied,
            RouteEffect::Allow => allowed = true,
        }
    }
    if allowed {
        Decision::Allowed
    } else {
        Decision::NoRule
    }
}

/// Whether a rule that lets `sender` send to `target` demands end-to-end encryption: any
/// matching allow rule with `require_e2e` does, whatever other rules allow.
pub(crate) fn requires_e2e(
    routes: &[Route],
    groups: &[Group],
    sender: &AccountName,
    target: &AccountName,
) -> bool {
    let member_of = |account: &AccountName, name: &AccountName| {
        groups
            .iter()
            .any(|g| &g.name == name && g.members.contains(account))
    };
    routes.iter().any(|r| {
        r.require_e2e
            && r.effect == RouteEffect::Allow
            && (&r.from == sender || member_of(sender, &r.from))
            && (&r.to == target || member_of(target, &r.to))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> AccountName {
        AccountName::parse(s).unwrap()
    }

    fn route(from: &str, to: &str, effect: RouteEffect) -> Route {
        Route {
            from: name(from),
            to: name(to),
            effect,
            require_e2e: false,
        }
    }

    #[test]
    fn default_deny_allow_and_deny_wins() {
        let groups = vec![
            Group {
                name: name("branches"),
                members: vec![name("paris"), name("rome")],
            },
            Group {
                name: name("hq"),
                members: vec![name("boss")],
            },
        ];
        let routes = vec![
            route("alice", "bob", RouteEffect::Allow),
            route("branches", "hq", RouteEffect::Allow),
            route("alice", "branches", RouteEffect::Allow),
            route("alice", "rome", RouteEffect::Deny),
        ];
        let check = |from: &str, to: &str, expect: Decision| {
            assert_eq!(
                decide(&routes, &groups, &name(from), &name(to)),
                expect,
                "{from}->{to}"
            );
        };
        check("alice", "bob", Decision::Allowed);
        check("bob", "alice", Decision::NoRule);
        check("paris", "boss", Decision::Allowed);
        check("paris", "hq", Decision::Allowed);
        check("boss", "paris", Decision::NoRule);
        check("alice", "paris", Decision::Allowed);
        check("alice", "branches", Decision::Allowed);
        check("alice", "rome", Decision::Denied);
        check("carol", "bob", Decision::NoRule);
    }

    #[test]
    fn a_rule_requiring_e2e_binds_whoever_it_matches() {
        let groups = vec![Group {
            name: name("branches"),
            members: vec![name("paris"), name("rome")],
        }];
        let mut strict = route("alice", "branches", RouteEffect::Allow);
        strict.require_e2e = true;
        let routes = vec![route("alice", "paris", RouteEffect::Allow), strict];
        let requires =
            |from: &str, to: &str| requires_e2e(&routes, &groups, &name(from), &name(to));
        // The group itself, and each member through the group's rule, even one a plain rule
        // also allows: the stricter rule wins.
        assert!(requires("alice", "branches"));
        assert!(requires("alice", "paris"));
        assert!(requires("alice", "rome"));
        assert!(!requires("paris", "rome"));
        assert!(!requires("alice", "bob"));
    }
}
