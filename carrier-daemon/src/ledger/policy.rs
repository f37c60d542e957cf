//! The policy questions the daemon asks the ledger, one per decision, so
//! the rules for who may link, open a session, or message whom are written
//! once and read the same on every path.
//!
//! [`Policy`] is implemented for every [`Ledger`]; its answers are owned
//! values, so no caller holds the ledger while it acts on them.

use carrier_proto::identity::{Did, SigningPublicKey};
use carrier_proto::ledger::{Kind, Standing, Status};

use super::Ledger;

/// Why the ledger says no about one DID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// Never registered.
    #[error("the ledger has no app {0}")]
    Unknown(Did),
    /// A device where an app was asked for.
    #[error("{0} is a device, not an app")]
    NotAnApp(Did),
    /// An app of another device than the one in question.
    #[error("{app} is an app of {host}, not of {expected}")]
    WrongHost {
        /// The app.
        app: Did,
        /// Its real host.
        host: Did,
        /// The device it was expected on.
        expected: Did,
    },
    /// Revoked itself, or with its host.
    #[error("{0} is revoked ({1:?})")]
    Revoked(Did, Status),
}

/// Which end of a message the ledger refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// The sending app.
    Sender,
    /// The recipient app.
    Recipient,
}

/// A refused message or stream: which party, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{denial}")]
pub struct Refused {
    /// Whose standing failed.
    pub party: Party,
    /// Why.
    pub denial: Denial,
}

/// The questions, answered from any [`Ledger`].
pub trait Policy {
    /// The current signing key of `did` if it is an active device: a peer
    /// we may link to.
    fn linkable(&self, did: &Did) -> Option<SigningPublicKey>;
    /// Whether `did` is registered and active.
    fn is_active(&self, did: &Did) -> bool;
    /// The key `app` must prove to open a session on `device`'s app socket:
    /// it must be an active app hosted by `device`.
    fn app_key(&self, app: &Did, device: &Did) -> Result<SigningPublicKey, Denial>;
    /// Where a message from local app `from` to app `to` goes: the device
    /// hosting `to`. Both must be active apps.
    fn route(&self, from: &Did, to: &Did) -> Result<Did, Refused>;
    /// May `from_app`, arriving from `from_device`, reach `to_app` on
    /// device `here`? The sender must be an active app of `from_device`,
    /// the recipient an active app of `here`.
    fn may_deliver(&self, from_device: &Did, from_app: &Did, to_app: &Did, here: &Did) -> Result<(), Refused>;
}

/// `did` as an active app hosted by `on` (any host when `on` is `None`);
/// returns its host.
fn active_app(ledger: &(impl Ledger + ?Sized), did: &Did, on: Option<&Did>) -> Result<(Did, Standing), Denial> {
    let standing = ledger.standing(did).ok_or(Denial::Unknown(*did))?;
    let Kind::App { host } = standing.kind else { return Err(Denial::NotAnApp(*did)) };
    if let Some(expected) = on
        && *expected != host
    {
        return Err(Denial::WrongHost { app: *did, host, expected: *expected });
    }
    if !standing.is_active() {
        return Err(Denial::Revoked(*did, standing.status));
    }
    Ok((host, standing))
}

impl<L: Ledger + ?Sized> Policy for L {
    fn linkable(&self, did: &Did) -> Option<SigningPublicKey> {
        self.standing(did).filter(Standing::is_active_device).map(|s| s.keys.signing)
    }

    fn is_active(&self, did: &Did) -> bool {
        self.standing(did).is_some_and(|s| s.is_active())
    }

    fn app_key(&self, app: &Did, device: &Did) -> Result<SigningPublicKey, Denial> {
        active_app(self, app, Some(device)).map(|(_, standing)| standing.keys.signing)
    }

    fn route(&self, from: &Did, to: &Did) -> Result<Did, Refused> {
        active_app(self, from, None).map_err(|denial| Refused { party: Party::Sender, denial })?;
        active_app(self, to, None).map(|(host, _)| host).map_err(|denial| Refused { party: Party::Recipient, denial })
    }

    fn may_deliver(&self, from_device: &Did, from_app: &Did, to_app: &Did, here: &Did) -> Result<(), Refused> {
        active_app(self, to_app, Some(here)).map_err(|denial| Refused { party: Party::Recipient, denial })?;
        active_app(self, from_app, Some(from_device)).map_err(|denial| Refused { party: Party::Sender, denial })?;
        Ok(())
    }
}
