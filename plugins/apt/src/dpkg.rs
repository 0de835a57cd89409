//! What dpkg and apt print, read from their machine-stable outputs only (never translated
//! prose): `dpkg-query -W -f=…` status lines, `apt-cache policy` blocks (in the C
//! locale), `apt-get -s` `Inst`/`Remv`/`Purg` lines; and Debian version comparison
//! (`dpkg --compare-versions` rules), so `2.0` and `0:2.0` are one version and a
//! downgrade is seen for what it is.

use std::cmp::Ordering;
use std::collections::BTreeMap;

/// The `dpkg-query` format: package, want, error flag, status, version.
pub const QUERY_FORMAT: &str =
    "-f=${Package}\\t${db:Status-Want}\\t${db:Status-Eflag}\\t${db:Status-Status}\\t${Version}\\n";

/// One package as dpkg knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// `install`, `hold`, `deinstall`, `purge`, `unknown`.
    pub want: String,
    /// `ok` or `reinstreq`.
    pub eflag: String,
    /// `installed`, `config-files`, `not-installed`, `half-installed`, `unpacked`, …
    pub status: String,
    /// Empty when not installed.
    pub version: String,
}

impl Status {
    /// Installed and configured (pending triggers count as installed: dpkg runs them).
    pub fn installed(&self) -> bool {
        matches!(
            self.status.as_str(),
            "installed" | "triggers-awaited" | "triggers-pending"
        )
    }

    pub fn held(&self) -> bool {
        self.want == "hold"
    }
}

/// Parse `dpkg-query -W` output in [`QUERY_FORMAT`], by package name (dpkg sorts its
/// output and merges duplicates, so order says nothing).
pub fn parse_query(text: &str) -> Result<BTreeMap<String, Status>, String> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let [name, want, eflag, status, version] = f[..] else {
            return Err(format!("dpkg-query printed an unexpected line `{line}`"));
        };
        out.insert(
            name.to_owned(),
            Status {
                want: want.to_owned(),
                eflag: eflag.to_owned(),
                status: status.to_owned(),
                version: version.to_owned(),
            },
        );
    }
    Ok(out)
}

/// One package's `apt-cache policy` block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The version apt would install, `None` for `(none)` (e.g. a virtual package).
    pub candidate: Option<String>,
    /// Every version in the version table, newest first.
    pub versions: Vec<String>,
}

/// Parse `apt-cache policy -- NAMES` (C locale), keeping only blocks whose header is
/// exactly one of the names asked for: for a name that does not exist apt falls back to
/// reading it as a regular expression or pattern and prints other packages.
pub fn parse_policy(text: &str, asked: &[&str]) -> BTreeMap<String, Policy> {
    let mut out: BTreeMap<String, Policy> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if !line.starts_with(' ') {
            current = line
                .strip_suffix(':')
                .filter(|n| asked.contains(n))
                .map(str::to_owned);
            if let Some(name) = &current {
                out.entry(name.clone()).or_default();
            }
            continue;
        }
        let Some(entry) = current.as_ref().and_then(|n| out.get_mut(n)) else {
            continue;
        };
        if let Some(c) = line.trim_start().strip_prefix("Candidate:") {
            let c = c.trim();
            entry.candidate = (c != "(none)" && !c.is_empty()).then(|| c.to_owned());
        } else if let Some(rest) = line.strip_prefix(" *** ").or_else(|| {
            // Version lines are indented by five, their sources by eight.
            line.strip_prefix("     ").filter(|r| !r.starts_with(' '))
        }) && let Some(version) = rest.split_whitespace().next()
        {
            entry.versions.push(version.to_owned());
        }
    }
    out
}

/// What an `apt-get -s` run would do: `install NAME VERSION`, `upgrade NAME FROM -> TO`,
/// `remove NAME VERSION`, … one line per package, in apt's order (the `Inst`, `Remv` and
/// `Purg` lines; `Conf` lines repeat the installs).
pub fn parse_simulation(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let (verb, rest) = match line.split_once(' ') {
            Some(("Inst", rest)) => ("install", rest),
            Some(("Remv", rest)) => ("remove", rest),
            Some(("Purg", rest)) => ("purge", rest),
            _ => continue,
        };
        let mut words = rest.split_whitespace();
        let Some(name) = words.next() else { continue };
        // `[old]` (before any `(`) is the installed version, `(new …)` the version to
        // install; `[all]` inside the parentheses is an architecture.
        let head = rest.split_once('(').map_or(rest, |(h, _)| h);
        let old = head
            .split_once('[')
            .and_then(|(_, r)| r.split_once(']'))
            .map(|(v, _)| v);
        let new = rest
            .split_once('(')
            .and_then(|(_, r)| r.split_whitespace().next());
        out.push(match (verb, old, new) {
            ("install", Some(old), Some(new)) => {
                let how = if compare(new, old) == Ordering::Less {
                    "downgrade"
                } else {
                    "upgrade"
                };
                format!("{how} {name} {old} -> {new}")
            }
            ("install", None, Some(new)) => format!("install {name} {new}"),
            (verb, Some(old), _) => format!("{verb} {name} {old}"),
            (verb, _, _) => format!("{verb} {name}"),
        });
    }
    out
}

/// Whether `name` is a Debian package name (policy manual 5.6.1: lowercase letters,
/// digits, `+ - .`, at least two characters, starting with a letter or digit). Anything
/// else is refused before a program sees it: apt reads names it does not know as
/// patterns and regular expressions, and dpkg-query expands globs.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && b.len() <= 128
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"+-.".contains(c))
}

/// Whether `version` is a Debian version (`[epoch:]upstream[-revision]`).
pub fn valid_version(version: &str) -> bool {
    let (epoch, rest) = match version.split_once(':') {
        Some((e, r)) => (Some(e), r),
        None => (None, version),
    };
    epoch.is_none_or(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()))
        && version.len() <= 128
        && rest.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && rest
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b".+~-:".contains(&c))
}

/// Compare two Debian versions as dpkg does (epoch, then upstream version, then
/// revision; `~` sorts before everything, even the end of the string).
pub fn compare(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, r)) => (e.parse().unwrap_or(0), r),
            None => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((up, rev)) => (epoch, up, rev),
            None => (epoch, rest, ""),
        }
    }
    fn order(c: Option<u8>) -> i32 {
        match c {
            Some(b'~') => -1,
            None => 0,
            Some(c) if c.is_ascii_alphabetic() => i32::from(c),
            Some(c) => i32::from(c) + 256,
        }
    }
    fn part(mut a: &[u8], mut b: &[u8]) -> Ordering {
        while !a.is_empty() || !b.is_empty() {
            // Non-digit prefixes, character by character.
            loop {
                let (ca, cb) = (a.first().copied(), b.first().copied());
                let da = ca.is_none_or(|c| c.is_ascii_digit());
                let db = cb.is_none_or(|c| c.is_ascii_digit());
                if da && db {
                    break;
                }
                let (oa, ob) = (
                    if da { 0 } else { order(ca) },
                    if db { 0 } else { order(cb) },
                );
                if oa != ob {
                    return oa.cmp(&ob);
                }
                a = &a[usize::from(!da)..];
                b = &b[usize::from(!db)..];
            }
            // Then numbers.
            let na = a.iter().take_while(|c| c.is_ascii_digit()).count();
            let nb = b.iter().take_while(|c| c.is_ascii_digit()).count();
            let num = |d: &[u8]| {
                let t = std::str::from_utf8(d)
                    .unwrap_or("0")
                    .trim_start_matches('0');
                (t.len(), t.to_owned())
            };
            let (x, y) = (num(&a[..na]), num(&b[..nb]));
            if x != y {
                return x.cmp(&y);
            }
            a = &a[na..];
            b = &b[nb..];
        }
        Ordering::Equal
    }
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| part(ua.as_bytes(), ub.as_bytes()))
        .then_with(|| part(ra.as_bytes(), rb.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_dpkg_does() {
        use Ordering::*;
        for (a, b, want) in [
            ("2.0", "0:2.0", Equal),
            ("1:1.0", "2.0", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0", "1.0-1", Less),
            ("1.0-1", "1.0-2", Less),
            ("1.10", "1.9", Greater),
            ("1.0a", "1.0", Greater),
            ("1.0+b1", "1.0", Greater),
            ("5.2.15-2+b8", "5.2.15-2+b13", Less),
            ("2.10-3", "2.10-3", Equal),
            ("1.0~~", "1.0~", Less),
        ] {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn names_and_versions_that_programs_would_expand_are_refused() {
        for bad in [
            "a",
            "Bash",
            "-y",
            "bas*",
            "b[a]sh",
            "x?",
            "?name(x)",
            "a b",
            "bash:amd64",
            "^x$",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        for good in ["bash", "libstdc++6", "g++-12", "python3.11", "0ad"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "x1", "1.0 2", "1:", ":1.0", "1.0*", "-1"] {
            assert!(!valid_version(bad), "{bad}");
        }
        for good in ["1.0", "2:1.2.3-4+deb12u1", "1.0~rc1", "5.2.15-2+b8"] {
            assert!(valid_version(good), "{good}");
        }
    }

    #[test]
    fn query_lines_are_keyed_by_package() {
        let q = parse_query(
            "hello\tinstall\tok\tinstalled\t2.10-3\nfx\thold\tok\tinstalled\t1.0\nold\tdeinstall\tok\tconfig-files\t2.0\ndoc\tunknown\tok\tnot-installed\t\n",
        )
        .expect("parse");
        assert!(q["hello"].installed() && !q["hello"].held());
        assert!(q["fx"].held());
        assert!(!q["old"].installed());
        assert_eq!(q["doc"].version, "");
        assert!(parse_query("garbage line\n").is_err());
    }

    #[test]
    fn policy_keeps_only_the_names_asked_for() {
        let text = "fx:\n  Installed: 1.0\n  Candidate: 2.0\n  Version table:\n     2.0 500\n        500 file:/tmp/r ./ Packages\n *** 1.0 500\n        500 file:/tmp/r ./ Packages\n        100 /var/lib/dpkg/status\nfx-app:\n  Installed: (none)\n  Candidate: 1.0\n  Version table:\n     1.0 500\n        500 file:/tmp/r ./ Packages\nmta:\n  Installed: (none)\n  Candidate: (none)\n  Version table:\n";
        let p = parse_policy(text, &["fx", "mta"]);
        assert_eq!(p.len(), 2, "fx-app was not asked for: {p:?}");
        assert_eq!(p["fx"].candidate.as_deref(), Some("2.0"));
        assert_eq!(p["fx"].versions, ["2.0", "1.0"]);
        assert_eq!(p["mta"].candidate, None);
    }

    #[test]
    fn simulations_list_what_else_would_change() {
        let text = "Reading package lists...\nInst fx-dep (1.0 localhost [all])\nInst fx [2.0] (1.0 localhost [all])\nInst fx-app [1.0] (2.0 localhost [all])\nRemv other [3.1]\nPurg gone\nConf fx-dep (1.0 localhost [all])\n";
        assert_eq!(
            parse_simulation(text),
            [
                "install fx-dep 1.0",
                "downgrade fx 2.0 -> 1.0",
                "upgrade fx-app 1.0 -> 2.0",
                "remove other 3.1",
                "purge gone"
            ]
        );
    }
}
