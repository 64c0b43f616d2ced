// Progressive enhancement of the invoice submission form (loaded by that page only): the form is
// sent with XMLHttpRequest so that a progress bar can show how much of a large backing data file
// has been sent. The web app's answer (the invoice page it redirected to, or the form again with
// what to fix) then replaces this page, as a plain form post would have shown it. Without this
// file, or when anything here fails, the form posts as usual.

const FORM = 'form[data-upload-form]'

function showAnswer (xhr) {
  // The answer is a whole page of this site: written as the new document, it runs its own scripts
  // and its own refresh (an invoice still being checked reloads itself).
  if (xhr.responseURL && xhr.responseURL !== window.location.href) {
    window.history.replaceState(null, '', xhr.responseURL)
  }
  document.open()
  document.write(xhr.responseText)
  document.close()
}

function send (form) {
  const progress = form.querySelector('[data-upload-progress]')
  const bar = progress && progress.querySelector('progress')
  const status = progress && progress.querySelector('[data-upload-status]')
  const button = form.querySelector('button[type="submit"], button:not([type])')
  const xhr = new XMLHttpRequest()
  xhr.open('POST', form.action)
  xhr.responseType = 'text'
  if (progress) {
    progress.hidden = false
  }
  if (button) {
    button.disabled = true
  }
  xhr.upload.addEventListener('progress', (event) => {
    if (!bar || !event.lengthComputable) {
      return
    }
    const percent = Math.floor((event.loaded / event.total) * 100)
    bar.value = percent
    bar.textContent = `${percent}%`
    if (status) {
      status.textContent = percent < 100 ? `${percent}% sent` : 'Sent: the lines are being checked…'
    }
  })
  xhr.addEventListener('load', () => {
    const type = xhr.getResponseHeader('content-type') || ''
    if (type.startsWith('text/html')) {
      showAnswer(xhr)
    } else {
      form.submit()
    }
  })
  // A failure of the request itself: the plain form post tells the person what happened.
  xhr.addEventListener('error', () => form.submit())
  xhr.send(new FormData(form))
}

document.addEventListener('submit', (event) => {
  const form = event.target
  if (!(form instanceof HTMLFormElement) || !form.matches(FORM)) {
    return
  }
  const file = form.querySelector('input[type="file"]')
  // Without a chosen file there is nothing to show progress of: the plain post says what to choose.
  if (!window.FormData || !file || !file.files || file.files.length === 0) {
    return
  }
  event.preventDefault()
  send(form)
})
