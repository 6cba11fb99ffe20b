//! Where a child actor sends its reports: strongly (the receiver is kept alive by the sender, as
//! tests and apps that start a `ProcessActor` or `ConnectionActor` themselves expect) or weakly.
//!
//! The supervisor's own children report weakly. A strong recipient back to the supervisor would
//! be an address of it, and actix keeps an actor alive while any address exists: the children
//! would keep their parent alive forever, so dropping the app's last `Addr` could never stop the
//! supervisor and its gateway (runtime-semantics.md, "Shutdown and drop"). A report to a
//! supervisor that is gone is dropped, which is what a report to a stopped actor does anyway.

use actix::dev::ToEnvelope;
use actix::{Actor, Handler, MailboxError, Message, Recipient, WeakAddr, WeakRecipient};

/// A report destination; see the module docs.
pub(crate) enum ReportTo<M>
where
    M: Message + Send,
    M::Result: Send,
{
    /// Keeps the receiver alive.
    Strong(Recipient<M>),
    /// Does not keep the receiver alive; reports to a receiver that is gone are dropped.
    Weak(WeakRecipient<M>),
}

impl<M> ReportTo<M>
where
    M: Message + Send,
    M::Result: Send,
{
    /// A weak destination: the actor behind `address`, without keeping it alive.
    pub(crate) fn weak<A>(address: &WeakAddr<A>) -> Self
    where
        A: Actor + Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: 'static,
    {
        ReportTo::Weak(address.clone().recipient())
    }

    /// Send without waiting (dropped when the receiver is gone or its mailbox is closed).
    pub(crate) fn do_send(&self, message: M) {
        match self {
            ReportTo::Strong(recipient) => recipient.do_send(message),
            ReportTo::Weak(recipient) => {
                if let Some(recipient) = recipient.upgrade() {
                    recipient.do_send(message);
                }
            }
        }
    }

    /// Send and wait until the receiver handled it (`MailboxError::Closed` when it is gone).
    pub(crate) async fn send(&self, message: M) -> Result<M::Result, MailboxError> {
        let recipient = match self {
            ReportTo::Strong(recipient) => recipient.clone(),
            ReportTo::Weak(recipient) => recipient.upgrade().ok_or(MailboxError::Closed)?,
        };
        recipient.send(message).await
    }
}

impl<M> Clone for ReportTo<M>
where
    M: Message + Send,
    M::Result: Send,
{
    fn clone(&self) -> Self {
        match self {
            ReportTo::Strong(recipient) => ReportTo::Strong(recipient.clone()),
            ReportTo::Weak(recipient) => ReportTo::Weak(recipient.clone()),
        }
    }
}

impl<M> From<Recipient<M>> for ReportTo<M>
where
    M: Message + Send,
    M::Result: Send,
{
    fn from(recipient: Recipient<M>) -> Self {
        ReportTo::Strong(recipient)
    }
}
