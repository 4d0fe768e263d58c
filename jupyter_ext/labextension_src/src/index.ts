/**
 * ad-inspect Anomaly Studio for JupyterLab: a Launcher card and a command-palette command that open
 * the studio in a main-area tab of its own: the notebook `anomaly_studio.ipynb` of the current folder,
 * created once and reused on every later click (no Untitled notebooks pile up), run top to bottom so
 * the panels are ready when the tab appears. The studio remembers the data and models roots last used
 * in that folder (`.ad-inspect-studio.json`, written by the panels), so the cell needs no arguments.
 */
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { ILauncher } from '@jupyterlab/launcher';
import { NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { LabIcon } from '@jupyterlab/ui-components';

export const COMMAND = 'ad-inspect:open-studio';
export const STUDIO_NOTEBOOK = 'anomaly_studio.ipynb';
export const STUDIO_CODE = [
  'from jupyter_ext import AnomalyStudio',
  '',
  '# data and models roots: the ones last used here (change them in the Data tab)',
  'studio = AnomalyStudio()',
  'studio'
].join('\n');

const ICON_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><g class="jp-icon3" fill="#616161">' +
  '<rect x="3" y="3" width="18" height="18" rx="2" fill="none" stroke="#616161" stroke-width="2"/>' +
  '<circle cx="15" cy="9" r="3" fill="#d32f2f"/>' +
  '<path d="M5 17l4-5 3 3 2-2 5 4z"/></g></svg>';

export const studioIcon = new LabIcon({ name: 'ad-inspect:studio', svgstr: ICON_SVG });
// the Launcher draws cards of its "Notebook" section from an image URL (a letter when there is none)
const ICON_URL = 'data:image/svg+xml;base64,' + btoa(ICON_SVG);

function studioNotebook(): object {
  return {
    cells: [
      {
        cell_type: 'code',
        execution_count: null,
        id: 'anomaly-studio',
        metadata: {},
        outputs: [],
        source: STUDIO_CODE
      }
    ],
    metadata: {
      kernelspec: { display_name: 'Python 3 (ipykernel)', language: 'python', name: 'python3' }
    },
    nbformat: 4,
    nbformat_minor: 5
  };
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'ad-inspect-studio:plugin',
  description: 'Open the ad-inspect Anomaly Studio in a tab of its own',
  autoStart: true,
  optional: [ILauncher, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    launcher: ILauncher | null,
    palette: ICommandPalette | null
  ) => {
    app.commands.addCommand(COMMAND, {
      label: args => (args['isPalette'] ? 'Open Anomaly Studio (ad-inspect)' : 'Anomaly Studio'),
      caption: 'The ad-inspect panels (data, train, tune, threshold, export, review) in anomaly_studio.ipynb',
      icon: args => (args['isPalette'] ? undefined : studioIcon),
      execute: async args => {
        const cwd = (args['cwd'] as string) || '';
        const path = cwd ? `${cwd}/${STUDIO_NOTEBOOK}` : STUDIO_NOTEBOOK;
        const contents = app.serviceManager.contents;
        let exists = true;
        try {
          await contents.get(path, { content: false });
        } catch {
          exists = false;
        }
        if (!exists) {
          await contents.save(path, { type: 'notebook', format: 'json', content: studioNotebook() });
        }
        const panel = (await app.commands.execute('docmanager:open', {
          path,
          factory: 'Notebook',
          kernel: { name: 'python3' }
        })) as NotebookPanel;
        await panel.context.ready;
        await panel.sessionContext.ready;
        if (!panel.content.widgets.some(cell => cell.model.sharedModel.getSource().includes('AnomalyStudio'))) {
          return panel; // the user rewrote the notebook: open it, run nothing
        }
        await NotebookActions.runAll(panel.content, panel.sessionContext);
        return panel;
      }
    });
    if (launcher) {
      launcher.add({ command: COMMAND, category: 'Notebook', rank: 10, kernelIconUrl: ICON_URL });
    }
    if (palette) {
      palette.addItem({ command: COMMAND, category: 'ad-inspect', args: { isPalette: true } });
    }
  }
};

export default plugin;
