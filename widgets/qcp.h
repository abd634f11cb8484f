// QCustomPlot, included the one way widgets may: qcustomplot.h uses Qt's keywords (signals, slots,
// foreach), which QT_NO_KEYWORDS turns off (to keep them away from torch); they are defined around it.
#pragma once

#include <QtGlobal>

#ifndef signals
#define KH_QCP_SIGNALS
#define signals Q_SIGNALS
#endif
#ifndef slots
#define KH_QCP_SLOTS
#define slots Q_SLOTS
#endif
#ifndef foreach
#define KH_QCP_FOREACH
#define foreach Q_FOREACH
#endif
#ifndef emit
#define KH_QCP_EMIT
#define emit Q_EMIT
#endif

#include <qcustomplot.h>

#ifdef KH_QCP_SIGNALS
#undef signals
#undef KH_QCP_SIGNALS
#endif
#ifdef KH_QCP_SLOTS
#undef slots
#undef KH_QCP_SLOTS
#endif
#ifdef KH_QCP_FOREACH
#undef foreach
#undef KH_QCP_FOREACH
#endif
#ifdef KH_QCP_EMIT
#undef emit
#undef KH_QCP_EMIT
#endif
