//! The loop behind the store's batching tasks (the group-commit [`super::writer`] and the
//! dedupe [`super::seen`] reader): take everything waiting in a channel, up to a limit,
//! and hand it to one piece of work, with a few pieces in flight at once. While a piece
//! waits for a free slot its batch keeps growing, which is what makes batches big under
//! load and single items when idle.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};

/// Runs until the channel closes: batches of items weighing up to `max_weight` in all
/// (`weight` of each), `in_flight` batches worked on at once.
pub(super) async fn run<T, W, F, Fut>(
    mut rx: mpsc::UnboundedReceiver<T>,
    in_flight: usize,
    max_weight: usize,
    weight: W,
    work: F,
) where
    T: Send + 'static,
    W: Fn(&T) -> usize,
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(in_flight));
    while let Some(first) = rx.recv().await {
        // Wait for a free slot first: the batch keeps growing meanwhile.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let mut total = weight(&first);
        let mut batch = vec![first];
        while total < max_weight {
            match rx.try_recv() {
                Ok(item) => {
                    total += weight(&item);
                    batch.push(item);
                }
                Err(_) => break,
            }
        }
        let piece = work(batch);
        tokio::spawn(async move {
            piece.await;
            drop(permit);
        });
    }
}
