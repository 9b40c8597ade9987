//! The identity graph, written once over any [`Kv`]: a profile per visitor, found by its
//! anonymous ids and its user id, holding the vendor ids seen with first and last time, the
//! consent last given, and what was merged into it.
//!
//! **The merge rule.** An event carrying a user id and an anonymous id (an `identify`, and
//! every event after it) links the two. If the anonymous id's profile has no user yet, it is
//! merged into the user's: for each vendor id the more recently seen value wins, the
//! anonymous ids are joined, and the anonymous profile is deleted. If it already belongs to
//! another user (a shared device), nothing moves: the anonymous id stays with its first user
//! and the event is attached to the user it names. An `alias` merges the profile of its
//! `previousId` (a user or an anonymous id) into the user's by the same rule.
//!
//! **Bounds.** A profile keeps at most `max_anonymous_ids` anonymous ids (the oldest go, with
//! their links) and `max_ids` vendor ids (the least recently seen go). Ids longer than
//! [`MAX_KEY_ID`] bytes are not stored.
//!
//! Keys: `a.<h>` and `u.<h>` link an anonymous or user id (`h`: its SHA-256, 128 bits in
//! hex, so no id appears in a key) to `p.<profile id>`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::capture::{Ids, meta_click};
use crate::kv::{Kv, Result, StoreError, Txn};
use crate::vendors::{self, Category};

/// Longest anonymous or user id stored, in bytes.
pub const MAX_KEY_ID: usize = 256;
/// Profiles merged into one, remembered by id.
const MAX_MERGED: usize = 16;
/// A link or a last-seen time is written again after this long, not on every event.
const RENEW_MS: i64 = 60 * 60 * 1000;

/// The bounds of one profile.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_anonymous_ids: usize,
    pub max_ids: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_anonymous_ids: 100,
            max_ids: 64,
        }
    }
}

/// A vendor id as the profile holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub value: String,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// One visitor.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Profile {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Oldest first.
    #[serde(default)]
    pub anonymous_ids: Vec<String>,
    #[serde(default)]
    pub ids: BTreeMap<String, Seen>,
    /// The categories of the last consent given, as the event said them.
    #[serde(default)]
    pub consent: BTreeMap<String, bool>,
    /// Profiles merged into this one, most recent last.
    #[serde(default)]
    pub merged: Vec<String>,
    pub created_ms: i64,
}

#[derive(Serialize, Deserialize)]
struct Link {
    profile: String,
    /// When the link was last written (it is renewed, not rewritten on every event).
    at: i64,
}

/// What one event tells the graph.
#[derive(Debug, Default)]
pub struct Observation<'a> {
    pub anonymous_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    /// An `alias`'s `previousId`.
    pub previous_id: Option<&'a str>,
    /// Vendor ids read from the event, already cut to what consent grants.
    pub ids: Ids,
    /// Categories the event's consent explicitly denies: their stored ids are deleted.
    pub revoked: Vec<Category>,
    /// Categories the event's consent grants: only their stored ids are attached.
    pub granted: Vec<Category>,
    /// The consent the event carried, to keep on the profile.
    pub consent: Option<BTreeMap<String, bool>>,
    pub now_ms: i64,
}

/// What the graph knows of the event's visitor.
#[derive(Debug, Default, PartialEq)]
pub struct Resolved {
    /// The vendor ids to attach (`context.ids`): stored and new, granted ones only.
    pub ids: Ids,
    /// The visitor's user id, when the profile has one.
    pub user_id: Option<String>,
}

fn hashed(id: &str) -> String {
    let digest = sha2::Sha256::digest(id.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn anonymous_key(id: &str) -> String {
    format!("a.{}", hashed(id))
}

fn user_key(id: &str) -> String {
    format!("u.{}", hashed(id))
}

fn profile_key(id: &str) -> String {
    format!("p.{id}")
}

fn usable(id: Option<&str>) -> Option<&str> {
    id.filter(|id| !id.is_empty() && id.len() <= MAX_KEY_ID)
}

/// The identity graphs of a node's tenants.
pub struct Identities {
    kv: Arc<dyn Kv>,
    policy: Policy,
}

impl Identities {
    pub fn new(kv: Arc<dyn Kv>, policy: Policy) -> Self {
        Self { kv, policy }
    }

    pub fn kv(&self) -> &Arc<dyn Kv> {
        &self.kv
    }

    /// A session over one batch of the tenant's events: one transaction, committed by
    /// [`Session::commit`].
    pub fn session(&self, tenant: &str) -> Result<Session<'_>> {
        Ok(Session {
            txn: self.kv.begin(tenant)?,
            policy: self.policy,
        })
    }

    /// Deletes the profile of a user or anonymous id and all its links; `false` when no
    /// profile has that id.
    pub fn erase(&self, tenant: &str, id: &str) -> Result<bool> {
        let mut session = self.session(tenant)?;
        let found = session.erase(id)?;
        session.commit()?;
        Ok(found)
    }

    /// The profile of a user or anonymous id.
    pub fn profile(&self, tenant: &str, id: &str) -> Result<Option<Profile>> {
        let mut session = self.session(tenant)?;
        let profile = match session.find(id)? {
            Some(profile_id) => session.load(&profile_id)?,
            None => None,
        };
        Ok(profile)
    }
}

/// One transaction's worth of graph changes.
pub struct Session<'a> {
    txn: Box<dyn Txn + 'a>,
    policy: Policy,
}

impl Session<'_> {
    pub fn commit(self) -> Result<()> {
        self.txn.commit()
    }

    fn read<T: serde::de::DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>> {
        match self.txn.get(key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("{key}: {e}"))),
        }
    }

    fn write<T: Serialize>(&mut self, key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.txn.put(key, bytes)
    }

    fn load(&mut self, profile_id: &str) -> Result<Option<Profile>> {
        self.read(&profile_key(profile_id))
    }

    fn linked(&mut self, key: &str) -> Result<Option<Link>> {
        self.read(key)
    }

    /// The profile id a user or anonymous id is linked to (user ids first).
    fn find(&mut self, id: &str) -> Result<Option<String>> {
        for key in [user_key(id), anonymous_key(id)] {
            if let Some(link) = self.linked(&key)? {
                return Ok(Some(link.profile));
            }
        }
        Ok(None)
    }

    /// Links `key` to `profile`, unless it already is and was written lately.
    fn link(&mut self, key: &str, profile: &str, now: i64) -> Result<()> {
        if let Some(link) = self.linked(key)?
            && link.profile == profile
            && now - link.at < RENEW_MS
        {
            return Ok(());
        }
        self.write(
            key,
            &Link {
                profile: profile.to_owned(),
                at: now,
            },
        )
    }

    fn profile_of(&mut self, key: Option<String>) -> Result<Option<Profile>> {
        let Some(key) = key else { return Ok(None) };
        match self.linked(&key)? {
            Some(link) => self.load(&link.profile),
            None => Ok(None),
        }
    }

    /// Applies one event to the graph and says what to attach to it.
    pub fn observe(&mut self, event: Observation<'_>) -> Result<Resolved> {
        let anonymous = usable(event.anonymous_id);
        let user = usable(event.user_id);
        let now = event.now_ms;
        if anonymous.is_none() && user.is_none() {
            return Ok(Resolved {
                ids: event.ids,
                user_id: None,
            });
        }
        let by_user = self.profile_of(user.map(user_key))?;
        let by_anonymous = self.profile_of(anonymous.map(anonymous_key))?;
        let mut dirty = false;
        // False when the anonymous id belongs to another user's profile: it stays there.
        let mut take_anonymous = true;
        let mut profile = match (user, by_user, by_anonymous) {
            (Some(_), Some(mine), Some(other)) if mine.id != other.id => {
                if other.user_id.is_none() {
                    dirty = true;
                    self.merge(other, mine, now)?
                } else {
                    take_anonymous = false;
                    mine
                }
            }
            (_, Some(mine), _) => mine,
            (Some(user), None, Some(mut anonymous_profile)) => match &anonymous_profile.user_id {
                None => {
                    anonymous_profile.user_id = Some(user.to_owned());
                    dirty = true;
                    anonymous_profile
                }
                Some(_) => {
                    dirty = true;
                    take_anonymous = false;
                    self.fresh(Some(user), None, now)
                }
            },
            (None, None, Some(anonymous_profile)) => anonymous_profile,
            (_, None, None) => {
                dirty = true;
                self.fresh(user, anonymous, now)
            }
        };
        if let (Some(previous), Some(user)) = (usable(event.previous_id), user)
            && let Some(previous_id) = self.find(previous)?
            && previous_id != profile.id
            && let Some(old) = self.load(&previous_id)?
            && old.user_id.as_deref().is_none_or(|u| u == user)
        {
            profile = self.merge(old, profile, now)?;
            dirty = true;
        }
        if let Some(anonymous) = anonymous
            && take_anonymous
            && !profile.anonymous_ids.iter().any(|a| a == anonymous)
        {
            profile.anonymous_ids.push(anonymous.to_owned());
            dirty = true;
        }
        dirty |= self.bound_anonymous_ids(&mut profile)?;
        dirty |= revoke(&mut profile, &event.revoked);
        dirty |= record(&mut profile, &event.ids, now, self.policy.max_ids);
        if let Some(consent) = event.consent
            && consent != profile.consent
        {
            profile.consent = consent;
            dirty = true;
        }
        if dirty {
            self.write(&profile_key(&profile.id), &profile)?;
        }
        if let Some(user) = user
            && profile.user_id.as_deref() == Some(user)
        {
            self.link(&user_key(user), &profile.id, now)?;
        }
        if let Some(anonymous) = anonymous
            && take_anonymous
            && profile.anonymous_ids.iter().any(|a| a == anonymous)
        {
            self.link(&anonymous_key(anonymous), &profile.id, now)?;
        }
        let mut ids: Ids = profile
            .ids
            .iter()
            .filter(|(name, _)| vendors::category(name).is_none_or(|c| event.granted.contains(&c)))
            .map(|(name, seen)| (name.clone(), seen.value.clone()))
            .collect();
        // What this event brought is attached even when the profile could not keep it.
        for (name, value) in event.ids {
            ids.entry(name).or_insert(value);
        }
        Ok(Resolved {
            ids,
            user_id: profile.user_id,
        })
    }

    fn fresh(&self, user: Option<&str>, anonymous: Option<&str>, now: i64) -> Profile {
        Profile {
            id: uuid::Uuid::now_v7().simple().to_string(),
            user_id: user.map(str::to_owned),
            anonymous_ids: anonymous.map(str::to_owned).into_iter().collect(),
            created_ms: now,
            ..Profile::default()
        }
    }

    /// Merges `from` into `into` (see the module's rule) and deletes `from`.
    fn merge(&mut self, from: Profile, mut into: Profile, now: i64) -> Result<Profile> {
        for (name, seen) in from.ids {
            match into.ids.get(&name) {
                Some(kept) if kept.last_ms >= seen.last_ms => {}
                _ => {
                    into.ids.insert(name, seen);
                }
            }
        }
        for anonymous in from.anonymous_ids {
            if !into.anonymous_ids.contains(&anonymous) {
                self.link(&anonymous_key(&anonymous), &into.id, now)?;
                into.anonymous_ids.push(anonymous);
            }
        }
        for (category, granted) in from.consent {
            into.consent.entry(category).or_insert(granted);
        }
        into.created_ms = into.created_ms.min(from.created_ms);
        into.merged.push(from.id.clone());
        let excess = into.merged.len().saturating_sub(MAX_MERGED);
        into.merged.drain(..excess);
        self.txn.delete(&profile_key(&from.id))?;
        Ok(into)
    }

    /// Drops the oldest anonymous ids past the bound, with their links.
    fn bound_anonymous_ids(&mut self, profile: &mut Profile) -> Result<bool> {
        let excess = profile
            .anonymous_ids
            .len()
            .saturating_sub(self.policy.max_anonymous_ids);
        for gone in profile.anonymous_ids.drain(..excess).collect::<Vec<_>>() {
            self.txn.delete(&anonymous_key(&gone))?;
        }
        Ok(excess > 0)
    }

    /// Deletes the profile of `id` with every link to it.
    pub fn erase(&mut self, id: &str) -> Result<bool> {
        let Some(profile_id) = self.find(id)? else {
            return Ok(false);
        };
        if let Some(profile) = self.load(&profile_id)? {
            for anonymous in &profile.anonymous_ids {
                self.txn.delete(&anonymous_key(anonymous))?;
            }
            if let Some(user) = &profile.user_id {
                self.txn.delete(&user_key(user))?;
            }
        }
        self.txn.delete(&user_key(id))?;
        self.txn.delete(&anonymous_key(id))?;
        self.txn.delete(&profile_key(&profile_id))?;
        Ok(true)
    }
}

/// Deletes the stored ids of revoked categories.
fn revoke(profile: &mut Profile, revoked: &[Category]) -> bool {
    let before = profile.ids.len();
    profile
        .ids
        .retain(|name, _| vendors::category(name).is_none_or(|c| !revoked.contains(&c)));
    profile.ids.len() != before
}

/// Records the ids seen now; whether the profile changed.
fn record(profile: &mut Profile, ids: &Ids, now: i64, max_ids: usize) -> bool {
    let mut changed = false;
    for (name, value) in ids {
        match profile.ids.get_mut(name) {
            Some(seen)
                if seen.value == *value
                    || (name == "fbc" && meta_click(&seen.value) == meta_click(value)) =>
            {
                if now - seen.last_ms >= RENEW_MS {
                    seen.last_ms = now;
                    changed = true;
                }
            }
            Some(seen) => {
                *seen = Seen {
                    value: value.clone(),
                    first_ms: now,
                    last_ms: now,
                };
                changed = true;
            }
            None => {
                if profile.ids.len() >= max_ids
                    && let Some(oldest) = profile
                        .ids
                        .iter()
                        .min_by_key(|(_, seen)| seen.last_ms)
                        .map(|(name, _)| name.clone())
                {
                    profile.ids.remove(&oldest);
                }
                profile.ids.insert(
                    name.clone(),
                    Seen {
                        value: value.clone(),
                        first_ms: now,
                        last_ms: now,
                    },
                );
                changed = true;
            }
        }
    }
    changed
}
