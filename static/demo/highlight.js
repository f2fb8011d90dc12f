// Highlights the segment being spoken inside the text area. A textarea cannot
// style part of its text, so a backdrop behind it (same font, padding and
// wrapping, transparent text) carries a <mark> at the segment's position.

export class Highlighter {
  /**
   * @param {HTMLTextAreaElement} textarea
   * @param {HTMLElement} backdrop element behind the textarea
   */
  constructor(textarea, backdrop) {
    this.textarea = textarea;
    this.backdrop = backdrop;
    this.ranges = new Map(); // segment index -> [start, end) in textarea.value
    this.texts = new Map(); // segment index -> its text
    this.cursor = 0;
    this.current = null;
    textarea.addEventListener("scroll", () => {
      backdrop.scrollTop = textarea.scrollTop;
    });
    textarea.addEventListener("input", () => this.render());
  }

  /** A new utterance whose text starts at `from` in the textarea. */
  reset(from = 0) {
    this.ranges.clear();
    this.texts.clear();
    this.cursor = from;
    this.show(null);
  }

  /** The server's segment: its text is an exact span of what was sent, in order. */
  add(index, text) {
    this.texts.set(index, text);
    const at = this.textarea.value.indexOf(text, this.cursor);
    if (at < 0) return; // the text was edited since it was sent: nothing to mark
    this.ranges.set(index, [at, at + text.length]);
    this.cursor = at + text.length;
  }

  /** Mark segment `index` (null: none). */
  show(index) {
    if (index === this.current) return;
    this.current = index;
    this.render();
  }

  render() {
    const b = this.backdrop;
    const range = this.current === null ? null : this.ranges.get(this.current);
    const value = this.textarea.value;
    if (!range || value.slice(range[0], range[1]) !== this.texts.get(this.current)) {
      b.replaceChildren();
      return;
    }
    const mark = document.createElement("mark");
    mark.textContent = value.slice(range[0], range[1]);
    // The zero-width space keeps a trailing newline's line box, as a textarea does.
    b.replaceChildren(
      document.createTextNode(value.slice(0, range[0])),
      mark,
      document.createTextNode(`${value.slice(range[1])}\u200b`),
    );
    b.scrollTop = this.textarea.scrollTop;
  }
}
