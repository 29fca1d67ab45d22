"use strict";
// the login form in the reader's language (i18n.js)
translatePage();
