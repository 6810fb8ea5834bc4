/**
 * dashboard-feedbox.js — a newest-first list in a box of fixed height that
 * new items never push around.
 *
 * The page around the box keeps its place because the box does not grow.
 * Inside it, items added at the top would push down the ones the reader is
 * looking at, so in the frame that adds them the box scrolls by exactly
 * their height: what was on screen stays where it was (while the list is
 * shorter than the box, a blank below it makes the room to scroll; it goes
 * once the reader is back at the top, where removing it moves nothing).
 * Then:
 * - a reader at the top who is not pointing at, touching or focused in the
 *   box is following the feed: in the frames after, the box glides up to the
 *   new items (a scroll: the motion the reader chose by staying at the top);
 * - anyone else (pointing, focused, scrolled down, or asking for reduced
 *   motion) keeps their view, and a button counts the new items and brings
 *   them into view on request. A reader who was at the top follows again
 *   once the pointer or focus leaves the box.
 * Adding and gliding never share a frame: a frame that moved the items by
 * anything but the scroll that compensates them would be a layout shift.
 */

const TOP_SLACK_PX = 4;
const GLIDE_STEP = 0.25; // each frame, the glide covers this part of the way left

export class FeedBox {
  /** `scroller`: the box that scrolls; `list`: the list in it; `jump`: the "new items" button (optional). */
  constructor({ scroller, list, jump = null, maxItems, describe = (n) => `↑ ${n} new` }) {
    this._scroller = scroller;
    this._list = list;
    this._jump = jump;
    this._max = maxItems;
    this._describe = describe;
    this._queue = [];          // nodes to add at the next frame, newest first
    this._frame = 0;
    this._gliding = false;
    this._asked = false;       // the reader asked for this glide (the button): pointing does not stop it
    this._engaged = new Set(); // 'pointer', 'focus'
    this._held = 0;
    this._heldAtTop = false;   // the hold began with the reader at the top
    this._spacer = document.createElement('div');
    this._spacer.setAttribute('aria-hidden', 'true');
    scroller.append(this._spacer);
    this._pad = 0;             // the spacer's height
    const motion = globalThis.matchMedia?.('(prefers-reduced-motion: reduce)');
    this._reduced = () => !!motion?.matches;
    scroller.addEventListener('pointerenter', () => this._engage('pointer', true));
    scroller.addEventListener('pointerleave', () => this._engage('pointer', false));
    scroller.addEventListener('focusin', () => this._engage('focus', true));
    scroller.addEventListener('focusout', (e) => { if (!scroller.contains(e.relatedTarget)) this._engage('focus', false); });
    scroller.addEventListener('wheel', () => { this._gliding = this._asked = false; }, { passive: true });
    scroller.addEventListener('scroll', () => this._scrolled(), { passive: true });
    jump?.addEventListener('click', () => this.toTop());
  }

  /** How many items the list shows (or will at the next frame). */
  get count() { return Math.min(this._max, this._list.childElementCount + this._queue.length); }

  /** True when the reader is following: at the top, and not busy in the box. */
  get following() {
    return !this._engaged.size && !this._reduced() && (this._gliding || this._scroller.scrollTop <= TOP_SLACK_PX);
  }

  /** Add `nodes` (newest first) above the others: now, or at the next frame while the box glides. */
  prepend(nodes) {
    this._queue.unshift(...nodes);
    if (this._queue.length > this._max) this._queue.length = this._max;
    if (this._gliding && document.visibilityState !== 'hidden') this._schedule();
    else this._add();
  }

  /** Show `nodes` (newest first) instead, from the top. */
  replace(nodes) {
    this._queue = [];
    this._list.replaceChildren(...nodes);
    this._padBy(-this._pad);
    this._scroller.scrollTop = 0;
    this._release();
  }

  /** Bring the newest items into view (the "new items" button). */
  toTop() {
    this._release();
    if (this._reduced()) this._scroller.scrollTop = 0;
    else this._gliding = this._asked = true;
    this._schedule();
  }

  _schedule() {
    if (!this._frame) this._frame = requestAnimationFrame(() => this._tick());
  }

  /** One frame: add what is queued, or else take one step of the glide. */
  _tick() {
    this._frame = 0;
    if (this._queue.length) this._add();
    else if (this._gliding) this._step();
    if (this._gliding || this._queue.length) this._schedule();
  }

  /** Add the queued nodes; scroll by their height so nothing on screen moves. */
  _add() {
    const nodes = this._queue;
    this._queue = [];
    const anchor = this._list.firstElementChild;
    const before = anchor ? anchor.getBoundingClientRect().top : 0;
    const follow = this.following;
    const atTop = this._scroller.scrollTop <= TOP_SLACK_PX;
    this._list.prepend(...nodes);
    while (this._list.childElementCount > this._max) this._list.lastElementChild.remove();
    if (!anchor?.isConnected) return;
    const top = this._scroller.scrollTop + anchor.getBoundingClientRect().top - before;
    const need = top + this._scroller.clientHeight - this._list.offsetHeight; // the blank that lets it scroll to `top`
    if (need > this._pad) this._padBy(need - this._pad);
    this._scroller.scrollTop = top;
    if (follow) this._gliding = true;
    else this._hold(nodes.length, atTop);
  }

  _step() {
    const top = this._scroller.scrollTop;
    this._gliding = top > 1;
    this._asked &&= this._gliding;
    this._scroller.scrollTop = this._gliding ? Math.floor(top * (1 - GLIDE_STEP)) : 0;
  }

  _engage(why, on) {
    if (on) {
      this._engaged.add(why);
      this._gliding &&= this._asked;
      return;
    }
    this._engaged.delete(why);
    if (!this._engaged.size && this._held && this._heldAtTop && !this._reduced()) this.toTop();
  }

  _scrolled() {
    if (this._scroller.scrollTop > TOP_SLACK_PX) return;
    this._padBy(-this._pad);
    this._release();
  }

  _padBy(px) {
    if (!px) return;
    this._pad += px;
    this._spacer.style.height = `${this._pad}px`; // CSSOM, which the page's CSP allows
  }

  _hold(n, atTop) {
    if (!this._held) this._heldAtTop = atTop;
    this._held += n;
    if (!this._jump) return;
    this._jump.textContent = this._describe(this._held);
    this._jump.hidden = false;
  }

  _release() {
    this._held = 0;
    if (this._jump) this._jump.hidden = true;
  }
}
